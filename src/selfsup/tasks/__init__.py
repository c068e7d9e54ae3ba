"""Pretext tasks, one file each. TASKS maps a CLI name to (module:class, one-line description).

The descriptions live here, not in the task modules, so `selfsup tasks` answers without
importing torch.
"""

from __future__ import annotations

import importlib

from selfsup.errors import SelfSupError

TASKS: dict[str, tuple[str, str]] = {
    "simclr": (
        "selfsup.tasks.simclr:SimCLR",
        "SimCLR (Chen et al. 2020): two augmented views, projection head, NT-Xent loss",
    ),
    "rotation": (
        "selfsup.tasks.rotation:Rotation",
        "RotNet (Gidaris et al. 2018): predict which of 4 rotations was applied",
    ),
    "relative_patch": (
        "selfsup.tasks.relative_patch:RelativePatch",
        "Doersch et al. 2015: which of the 8 neighbours of a centre patch is this patch",
    ),
    "jigsaw": (
        "selfsup.tasks.jigsaw:Jigsaw",
        "Noroozi & Favaro 2016: which permutation shuffled the 3x3 tiles",
    ),
    "inpainting": (
        "selfsup.tasks.inpainting:Inpainting",
        "Context encoder (Pathak et al. 2016): fill in a masked region, L2 + adversarial",
    ),
    "colorization": (
        "selfsup.tasks.colorization:Colorization",
        "Zhang et al. 2016: predict the Lab colour channels ab from lightness L",
    ),
    "autoencoder": (
        "selfsup.tasks.autoencoder:Autoencoder",
        "Autoencoder (plain, denoising or masked): reconstruct the image from its code",
    ),
    "gan": (
        "selfsup.tasks.gan:GAN",
        "DCGAN (Radford et al. 2016): the discriminator's features are the representation",
    ),
    "npid": (
        "selfsup.tasks.npid:NPID",
        "Instance discrimination (Wu et al. 2018): every image is its own class, memory bank",
    ),
    "pirl": (
        "selfsup.tasks.pirl:PIRL",
        "PIRL (Misra & van der Maaten 2020): image and its jigsaw agree, memory-bank NCE",
    ),
    "moco": (
        "selfsup.tasks.moco:MoCo",
        "MoCo v2 (Chen et al. 2020): momentum encoder and a queue of negative keys",
    ),
    "micle": (
        "selfsup.tasks.micle:MICLe",
        "MICLe (Azizi et al. 2021): two different images of the same group are positives",
    ),
    "byol": (
        "selfsup.tasks.byol:BYOL",
        "BYOL (Grill et al. 2020): predict a momentum target network, no negatives",
    ),
    "simsiam": (
        "selfsup.tasks.simsiam:SimSiam",
        "SimSiam (Chen & He 2021): predictor + stop-gradient, no negatives, no momentum",
    ),
    "barlow_twins": (
        "selfsup.tasks.barlow_twins:BarlowTwins",
        "Barlow Twins (Zbontar et al. 2021): cross-correlation of two views towards identity",
    ),
    "vicreg": (
        "selfsup.tasks.vicreg:VICReg",
        "VICReg (Bardes et al. 2022): invariance, variance and covariance terms",
    ),
    "mlm": (
        "selfsup.tasks.mlm:MaskedLM",
        "BERT (Devlin et al. 2019), text: predict 15% masked tokens (80/10/10), dynamic masks",
    ),
    "nsp": (
        "selfsup.tasks.nsp:NextSentence",
        "BERT, text: is sentence B the true next sentence of A? ([CLS] A [SEP] B [SEP])",
    ),
    "mlm+nsp": (
        "selfsup.tasks.nsp:MaskedLMNextSentence",
        "BERT's full objective, text: masked LM + next sentence prediction, losses summed",
    ),
    "clm": (
        "selfsup.tasks.clm:CausalLM",
        "GPT (Radford et al. 2018), text: next-token prediction under a causal mask",
    ),
    "tlm": (
        "selfsup.tasks.tlm:TranslationLM",
        "XLM (Lample & Conneau 2019), parallel text: masked LM over a sentence + translation",
    ),
    "word2vec": (
        "selfsup.tasks.word2vec:SkipGram",
        "word2vec (Mikolov et al. 2013), text: skip-gram with negative sampling",
    ),
    "frame_order": (
        "selfsup.tasks.frame_order:FrameOrder",
        "Shuffle and Learn (Misra et al. 2016): is a tuple of 3 frames in temporal order (video)",
    ),
    "odd_one_out": (
        "selfsup.tasks.odd_one_out:OddOneOut",
        "O3N (Fernando et al. 2017): which of several subsequences is shuffled (video)",
    ),
    "future_frame": (
        "selfsup.tasks.future_frame:FutureFrame",
        "Future frame prediction (Srivastava et al. 2015): conv or GRU predictor + decoder, "
        "L1/L2/BCE on pixels (video)",
    ),
    "dpc": (
        "selfsup.tasks.dpc:DensePredictiveCoding",
        "Dense Predictive Coding (Han et al. 2019): future feature maps told apart by InfoNCE "
        "(video)",
    ),
}
TEXT_TASKS = ("mlm", "nsp", "mlm+nsp", "clm", "tlm", "word2vec")


def task_class(name: str) -> type:
    """The Task class for a CLI name, imported on demand."""
    if name not in TASKS:
        raise SelfSupError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}")
    module_name, class_name = TASKS[name][0].split(":")
    return getattr(importlib.import_module(module_name), class_name)
