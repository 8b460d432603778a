"""The paper's claims, declared before the runs that judge them.

Each `Claim` states what Chu, Wei & Zhao (arXiv 2012.02452) claim, in their words where
their text is at hand (the abstract; ``verbatim``) and otherwise as the section was read
for tfnode's issue 27 (``verbatim=False``: the body of the paper is not reachable from
the machines tfnode is built on, and the page says so), and fixes how it is judged
before any number is seen: which runs (by folder name), which cells are primary (the
per-example worst case over the run's attacks at eps 0.1 / 0.2 / 0.3), which model the
claim says is the more robust, and which runs give the seed spread. `tfnode.paper.verdicts`
then applies one rule to all of them: an exact McNemar test per primary cell, Holm-
corrected across the claim's eps, and a direction only where the corrected p is below
0.05 and every seed's difference has the same sign.
"""

import dataclasses

SOURCE = ("Chu, Wei & Zhao, \"Towards Natural Robustness Against Adversarial Examples\", "
          "arXiv 2012.02452")

# The abstract, verbatim (the ar5iv rendering of arXiv 2012.02452): the sentences the
# claims below quote.
ABSTRACT_BOUND = ("we theoretically prove that there is an upper bound for neural networks "
                  "with identity mappings to constrain the error caused by adversarial "
                  "noises. However, in actual computations, this kind of neural network no "
                  "longer holds any upper bound and is therefore susceptible to adversarial "
                  "examples.")
ABSTRACT_ODE = ("we demonstrate that a new family of deep neural networks called Neural ODEs "
                "(Chen et al., 2018) holds a weaker upper bound. This weaker upper bound "
                "prevents the amount of change in the result from being too large. Thus, "
                "Neural ODEs have natural robustness against adversarial examples. We "
                "evaluate the performance of Neural ODEs compared with ResNet under three "
                "white-box adversarial attacks (FGSM, PGD, DI2-FGSM) and one black-box "
                "adversarial attack (Boundary Attack).")
ABSTRACT_AT = ("Finally, we show that the natural robustness of Neural ODEs is even better "
               "than the robustness of neural networks that are trained with adversarial "
               "training methods, such as TRADES and YOPO.")

PRIMARY_EPS = ("0.1", "0.2", "0.3")
# Joins run names into one run: the per-example worst case over both runs' attacks, on
# the images both attacked (`tfnode.paper.runs.joint_report`).
JOINT = "+"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper and how tfnode judges it.

    Attributes:
      key: a short name.
      title: the claim in a few words.
      section: where the paper makes it.
      words: the paper's words (``verbatim``) or the section as read (not verbatim).
      verbatim: whether ``words`` quotes the paper.
      comparison: ``"ode_vs_other"`` (an ODE model against a model without ODE blocks
        in one run), ``"small_h_vs_large_h"`` (the smallest step size h against the
        largest, one model family in one run) or ``"sweep"`` (every member of a step-size
        sweep against its h = 1 member, `tfnode.paper.verdicts`: a "no gain" claim on
        robustness and a "trains badly" claim on clean accuracy).
      runs: the run folders (their names) that judge it; ``"a+b"`` (`JOINT`) is one run:
        the per-example worst case over runs a's and b's attacks on the same models, on
        the images both attacked.
      attack: ``"worst case"`` (the per-example worst case over the run's attacks) or one
        attack's cells.
      primary_eps: the eps of the primary cells, one Holm family.
      seed_runs: ``(run, seed run)`` pairs: a run of the same comparison with models of
        another training seed (folder names); the sign of its difference at each eps
        it ran must agree with the run's.
      distances: also compare the attack's per-example L2 distances (paired Wilcoxon;
        a distance-minimizing attack such as the Boundary Attack).
      not_run: why tfnode does not judge it here ("" if it does).
      attacks_compared: ``(attack a, attack b)``: compare two attacks on the run's ODE
        model instead of two models (``a`` the one said to leave more images robust).
      note: what the page says of ``words`` instead of the default (a quotation, or the
        section as read).
      quote: the abstract's words on the same point, verbatim ("" for none).
    """

    key: str
    title: str
    section: str
    words: str
    verbatim: bool
    comparison: str = "ode_vs_other"
    runs: tuple = ()
    attack: str = "worst case"
    primary_eps: tuple = PRIMARY_EPS
    seed_runs: tuple = ()
    distances: bool = False
    not_run: str = ""
    attacks_compared: tuple = ()
    note: str = ""
    quote: str = ""


SEED_RUNS = (("mnist_gradient", "mnist_seed1"), ("mnist_gradient", "mnist_seed2"))
ALL_FOUR = "mnist_gradient" + JOINT + "mnist_boundary"

CLAIMS = (
    Claim("natural_robustness", "ODE-Nets are more robust than ResNets",
          "Abstract; MNIST in Sec. 4.2 (Table 2, Fig. 3)", ABSTRACT_ODE, True,
          runs=("mnist_gradient",), seed_runs=SEED_RUNS),
    Claim("natural_robustness_di2", "... under DI2-FGSM", "Abstract; Sec. 4.2",
          ABSTRACT_ODE, True, runs=("mnist_gradient",), attack="di2_fgsm",
          seed_runs=SEED_RUNS),
    Claim("natural_robustness_all_attacks", "... under the paper's four attacks together",
          "Abstract; MNIST in Sec. 4.2", ABSTRACT_ODE, True, runs=(ALL_FOUR,),
          seed_runs=tuple((ALL_FOUR, seed) for _, seed in SEED_RUNS),
          note="The abstract, verbatim. Judged on the images the Boundary run attacked: "
               "an image is robust only if FGSM, PGD-40, DI2-FGSM and the Boundary Attack "
               "all leave it classified correctly; the seed runs hold the gradient "
               "attacks only."),
    Claim("natural_robustness_boundary", "... under the Boundary Attack", "Abstract; Sec. 4.2",
          ABSTRACT_ODE, True, runs=("mnist_boundary",), attack="boundary", distances=True),
    Claim("natural_robustness_audit", "... under every attack of the audit",
          "Abstract; MNIST in Sec. 4.2", ABSTRACT_ODE, True, runs=("mnist_audit",),
          note="The abstract, verbatim. Declared after the audit's run (issue 27) had "
               "finished, and judged by the same rule as the claims above: the worst case is "
               "per example over every attack of `--audit` (the ODE-Net's twelve include "
               "three solver surrogates that a ResNet, with no ODE block, does not get)."),
    Claim("step_size_theory", "A smaller step size h makes a skip-connection network more "
          "robust", "Sec. 3.1 and 3.3",
          "The step size h = 1 of a ResNet block y + h f(y) (and of the other skip "
          "connections read as numerical schemes) is the main reason for the network's "
          "lack of robustness: with a small h the error |z_n - y_n| an input perturbation "
          "eps causes is bounded by c|eps|.", False, quote=ABSTRACT_BOUND,
          comparison="small_h_vs_large_h",
          runs=("mnist_steps_resnet", "mnist_steps_polynet", "mnist_steps_heun",
                "mnist_steps_fractal_rk2", "mnist_steps_revnet"),
          seed_runs=(("mnist_steps_resnet", "mnist_steps_resnet_seed1"),
                     ("mnist_steps_resnet", "mnist_steps_resnet_seed2"))),
    Claim("step_size_experiment", "Small h brings no obvious robustness; very small h "
          "trains badly", "Sec. 4.1 (ResNet-56 on CIFAR-10, h = 1 ... 1e-10)",
          "A ResNet with a small step size h shows no obvious gain in robustness, and a very "
          "small h makes the network hard to train.", False,
          comparison="sweep", runs=("mnist_resnet_step_sizes",), attack="transfer",
          primary_eps=("0.1", "0.3", "0.5")),
    Claim("adjoint_masking", "PGD through TFP's adjoint gradient overstates the ODE-Net's "
          "robustness", "not a claim of the paper: Huang et al. 2020's warning that an "
          "adaptive solver's gradient can mask",
          "PGD that differentiates the ODE-Net through TFP's DormandPrince and its adjoint "
          "gradient (what a TFP or torchdiffeq user attacks through) leaves more images "
          "robust than PGD through the exact gradient of the solve the model computes.",
          False, runs=("mnist_adjoint",), attacks_compared=("pgd_adjoint", "pgd"),
          note="A hypothesis tfnode tests as a candidate explanation of the paper's "
               "results, declared before its run; not the paper's words."),
    Claim("beats_adversarial_training", "ODE-Nets beat TRADES and YOPO", "Abstract; Sec. 4.2.3",
          ABSTRACT_AT, True,
          not_run="the paper's comparison is PreAct-ResNet18 on CIFAR-10, and CIFAR-10 is not "
                  "reachable from this machine (docs/data.md)"),
)


def get(key):
    """The claim named ``key``."""
    return next(c for c in CLAIMS if c.key == key)


# What the paper ran that tfnode has not run here, and why (the page's last section).
NOT_RUN = (
    "CIFAR-10 (the paper's ODE-Net, ResNet and ResNet-56 step sizes, PreAct-ResNet18 with "
    "PGD-AT, TRADES and YOPO): CIFAR-10 is in none of the registries these machines reach "
    "(docs/data.md); the loaders and flagfiles are tested on files generated in its "
    "format, and no CIFAR-10 number is reported.",
    "The paper's full-length width-64 MNIST models (flags/mnist_node.cfg, "
    "flags/mnist_resnet.cfg: 100 epochs, about 28 h for the ODE-Net on 2 CPU cores): the "
    "models judged here are the main job's (width 32, 4 epochs), at the paper's clean "
    "accuracy.",
)
