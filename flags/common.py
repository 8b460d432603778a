"""Flag groups shared by the tools (TF Model Garden style): definitions only.

Every flag is defined once, in a ``define_*_flags`` group, optional, with a default; an
app calls the groups it uses and no other, so that it never defines a flag it would
refuse. `flags.configs` turns the values into the library's config objects; library code
never reads FLAGS. Options of a model, an attack, a defense or the tuner are values of
one repeatable flag each (``--model_option=rtol=1e-4``, ``--attack_option=pgd.num_steps=
100``), so that a new option is a registry entry, not a new flag.
"""

from absl import flags

_DEFINED = set()


def _group(define):
    """Makes a ``define_*_flags`` function define its flags once per process (apps share
    groups, and the tests import several apps into one process): each flag has exactly
    one definition, here."""
    def once():
        if define.__name__ not in _DEFINED:
            _DEFINED.add(define.__name__)
            define()
    once.__name__ = define.__name__
    once.__doc__ = define.__doc__
    return once


@_group
def define_data_flags():
    """The data, the batch and the seed (every app that trains or evaluates)."""
    flags.DEFINE_string("dataset", "mnist", "Dataset: mnist, fashion_mnist or cifar10.")
    flags.DEFINE_string("data_dir", None, "Folder with TFDS data or the raw files (IDX or "
                        "CIFAR-10 python batches). Unset: the cache, then a download.")
    flags.DEFINE_integer("batch_size", 128,
                         "Batch size; training uses full batches only (without "
                         "--steps_per_epoch, the last partial batch of each epoch is dropped); "
                         "evaluation calls the model with this batch size.")
    flags.DEFINE_integer("seed", 0, "Seed: weight init and data shuffling (train); random "
                         "starts, transforms and proposals (evaluate; keyed per example by "
                         "its index, Square and Boundary by batch).")


@_group
def define_model_option_flag():
    """``--model_option`` (``tools.evaluate`` takes it alone, for inference options)."""
    flags.DEFINE_multi_string(
        "model_option", [], "NAME=VALUE, repeatable: an option of --model "
        "(tfnode.models.model_options(name) lists them), e.g. rtol=1e-4, atol=1e-4, "
        "step_size=0.1 (a fixed-step solver's h, a ResNet's residual scale), "
        "first_step_size=0.01, gradient=adjoint, per_sample_steps=true (each sample keeps "
        "its own adaptive step, so its logits do not depend on its batch), depth=8. "
        "tools.evaluate takes per_sample_steps only (default there: true).")


@_group
def define_model_flags():
    """The model to build (``tools.train``, ``tools.tune``, ``tools.sweep``,
    ``tools.export``)."""
    define_model_option_flag()
    flags.DEFINE_string("model", "node", "Registered model name (tfnode.models.available()).")
    flags.DEFINE_string("solver", None, "Short for --model_option=solver=NAME: the ODE "
                        "solver (tfnode.ode.SOLVERS): adaptive dopri5, tsit5, bosh3; "
                        "fixed-step rk4, heun, midpoint, euler (model default: dopri5).")
    flags.DEFINE_integer("width", 32, "Short for --model_option=width=N: channels of the "
                         "ODE-Net / MNIST ResNet. 32 makes the default main job fit 20 "
                         "minutes on 2 CPU cores; the paper's models (Chen et al.'s, "
                         "flags/mnist_*.cfg) use 64. Ignored by models without a width "
                         "unless given explicitly.")


@_group
def define_recipe_flags():
    """The training recipe (`tfnode.training.TrainConfig`'s fields that every trainer
    shares: ``tools.train``, each trial of ``tools.tune``, each member of ``tools.sweep``)."""
    flags.DEFINE_integer("epochs", 4, "Training epochs.")
    flags.DEFINE_float("learning_rate", 3e-3, "Peak learning rate.")
    flags.DEFINE_string("optimizer", "adam", "adam or sgd (momentum 0.9).")
    flags.DEFINE_string("lr_schedule", "cosine", "cosine (to 0), constant, step "
                        "(x0.1 at 50% and 75% of training) or halve50 (x0.5 every 50 "
                        "epochs).")
    flags.DEFINE_integer("validation_size", 0, "Hold out the last N training examples and "
                         "report their accuracy after each epoch (val_accuracy in "
                         "metrics.json): choose settings on them, never on the test split.")
    flags.DEFINE_float("weight_decay", 0.0, "Weight decay as PyTorch's optimizers apply it "
                       "(wd * w added to the gradient, before SGD's momentum), as the "
                       "published recipes give it; 0: none.")
    flags.DEFINE_integer("steps_per_epoch", None, "Cut epochs to this many steps "
                         "(for smoke runs).")
    flags.DEFINE_integer("checkpoint_steps", None, "Also save the resume state every N steps.")
    flags.DEFINE_integer("eval_batch_size", None, "Test batch size (default: --batch_size).")


@_group
def define_strategy_flag():
    """Where training runs (``tools.train``, ``tools.tune``)."""
    flags.DEFINE_string("strategy", "default", "tf.distribute strategy: default (one "
                        "device), mirrored (local GPUs), multi_worker (TF_CONFIG per "
                        "worker), tpu (TPU_NAME); --batch_size is the global batch.")


@_group
def define_train_flags():
    """Flags of ``tools.train``."""
    define_data_flags()
    define_model_flags()
    define_recipe_flags()
    define_strategy_flag()
    flags.DEFINE_integer("collective_timeout", 600, "multi_worker: seconds a step's "
                         "all-reduce waits for the other workers before the run fails.")
    define_export_target_flags()
    flags.DEFINE_string("model_dir", None, "Checkpoints and TensorBoard logs "
                        "(default runs/<model>_<dataset>).")
    flags.DEFINE_boolean("deterministic", False, "TensorFlow's op determinism (for GPUs; "
                         "on CPU training repeats bit for bit without it).")
    flags.DEFINE_boolean("overwrite", False, "Train from scratch even if --model_dir holds "
                         "an unfinished run (which is otherwise resumed) or a finished one "
                         "(which is otherwise left as it is).")
    flags.DEFINE_string("defense", None, "Adversarial training (tfnode.training.defenses.available()): "
                        "pgd_at (Madry et al. 2018), trades (Zhang et al. 2019), yopo "
                        "(Zhang et al. 2019), with their published settings per dataset. "
                        "Unset: standard training.")
    flags.DEFINE_multi_string("defense_option", [], "DEFENSE.OPTION=VALUE, repeatable: an "
                              "option of --defense, e.g. pgd_at.num_steps=10 or "
                              "trades.beta=6.")
    flags.DEFINE_string("regularizer", None, "A penalty added to the training loss, with or "
                        "without --defense (tfnode.training.regularizers.available()): "
                        "kinetic_jacobian (RNODE, Finlay et al. 2020). Unset: none.")
    flags.DEFINE_multi_string("regularizer_option", [], "REGULARIZER.OPTION=VALUE, "
                              "repeatable: an option of --regularizer, e.g. "
                              "kinetic_jacobian.jacobian_norm2=0.05.")


@_group
def define_evaluate_flags():
    """Flags of ``tools.evaluate`` (attack sweeps); the attacks' defaults are the paper's
    settings, kept in the attack registry, and changed with --attack_option."""
    define_data_flags()
    define_model_option_flag()
    define_model_path_flag()
    flags.DEFINE_string("compare_model_path", None, "A second model evaluated the same way "
                        "(e.g. the ResNet next to the ODE-Net).")
    flags.DEFINE_string("source_model_path", None, "Model on which transfer crafts its "
                        "adversarials.")
    flags.DEFINE_string("split", "test", "Dataset split.")
    flags.DEFINE_list("attacks", ["fgsm", "pgd"], "Registered attacks, by name "
                      "(tfnode.attacks.available(); docs/evaluation.md lists them).")
    define_budget_flags()
    define_output_flag()
    define_attack_option_flag()
    flags.DEFINE_bool("audit", False, "Gradient-masking audit: PGD through solver "
                      "surrogates (adjoint, tight tolerance, rk4) where they apply, stronger "
                      "and unbounded PGD, APGD-CE/DLR, Square and Boundary Attacks, transfer "
                      "from --source_model_path; the per-example worst case, the checks and a "
                      "verdict at the top of report.md.")
    flags.DEFINE_list("tolerance_grid", [], "ODE models: rtol = atol values; PGD "
                      "crafted at each is evaluated at each (attack-time vs inference-time "
                      "tolerance).")
    flags.DEFINE_bool("trajectories", False, "Measure the paper's bound: growth of "
                      "random and PGD perturbations along the ODE trajectory or residual "
                      "blocks, and the empirical Lipschitz constant of the ODE/residual "
                      "function.")
    flags.DEFINE_bool("certify", False, "Add certified robust accuracy per eps by interval "
                      "bound propagation (fixed-step solvers only), bracketing the truth "
                      "between it and the attacks' worst case (docs/robust.md).")
    flags.DEFINE_string("schedule", "fast", "fast: attack only what is still robust (early "
                        "exit per example, eps in increasing order on the survivors, Square "
                        "and Boundary on the other attacks' survivors); exhaustive: every "
                        "attack on every example at every eps (docs/evaluation.md).")
    flags.DEFINE_string("shard", None, "INDEX/COUNT: split the examples into COUNT "
                        "contiguous shards and evaluate shard INDEX (0-based), e.g. 0/4; "
                        "then merge them with python -m tools.merge_shards "
                        "--output_dir=<the same folder>. Unset: under TF_CONFIG worker i "
                        "of N takes shard i/N and the chief merges the shards in a shared "
                        "--output_dir; else all examples.")


@_group
def define_attack_option_flag():
    """``--attack_option`` (``tools.evaluate``; ``tools.sweep`` for its transfer attack)."""
    flags.DEFINE_multi_string("attack_option", [], "ATTACK.OPTION=VALUE, repeatable: an "
                              "option of a registered attack or an audit variant, e.g. "
                              "pgd.num_steps=100, square.max_queries=300, "
                              "pgd_strong.restarts=2, transfer.attack=pgd. Unset options keep "
                              "the published defaults (docs/evaluation.md lists them).")


@_group
def define_budget_flags():
    """The eps list and the examples attacked (``tools.evaluate``, ``tools.sweep``)."""
    flags.DEFINE_list("eps", ["0.1", "0.2", "0.3"], "Linf budgets on the [0, 1] pixel "
                      "scale; fractions keep the pixel units in the report, e.g. "
                      "8/255,16/255.")
    flags.DEFINE_integer("num_examples", 1000, "Evaluate the first N examples of the split.")


@_group
def define_output_flag():
    """Where an app writes its folder (``tools.evaluate``, ``tools.merge_shards``,
    ``tools.sweep``, ``tools.tune``)."""
    flags.DEFINE_string("output_dir", None,
                        "Output folder. Default: tools.evaluate reports/<model>_<dataset> (a "
                        "shard writes to <output_dir>/shards/<i>-of-<N>); tools.sweep "
                        "reports/<model>_<dataset>_step_sizes; tools.tune reports/tune (the "
                        "search resumes there); tools.merge_shards: required.")


@_group
def define_sweep_flags():
    """Flags of ``tools.sweep``: the family is built and trained by the model and recipe
    flags; its transfer attack is ``--attack_option=transfer.attack=NAME``."""
    define_data_flags()
    define_model_flags()
    define_recipe_flags()
    define_budget_flags()
    define_output_flag()
    define_attack_option_flag()
    flags.DEFINE_list("step_sizes", ["1", "0.1", "0.01", "0.001", "1e-6"],
                      "The step sizes h of the family, one trained member each.")
    flags.DEFINE_string("source_model", "resnet", "Registered model on which the "
                        "transferred attack is crafted (Chu et al.: a small network with "
                        "three residual blocks).")
    flags.DEFINE_multi_string("source_option", ["num_blocks=3"], "OPTION=VALUE, "
                              "repeatable: a model option of --source_model (resnet: "
                              "num_blocks=3; resnet56: depth=8).")


@_group
def define_export_target_flags():
    """Where a SavedModel goes (``tools.train`` and ``tools.export``)."""
    flags.DEFINE_string("export_dir", "savedmodels", "SavedModel base folder "
                        "(<export_dir>/<name>/<version>/, the layout TF Serving polls).")
    flags.DEFINE_string("export_name", None, "Export name (tools.train's default: "
                        "<model>_<dataset>).")


@_group
def define_model_path_flag():
    """The trained model an app reads (``tools.evaluate`` and ``tools.export``)."""
    flags.DEFINE_string("model_path", None, "A trained model: savedmodels/<name>/<version> "
                        "(uses its model.keras) or a .keras file; tools.export also takes a "
                        "run's epoch_NNN.weights.h5 or its checkpoints folder (with --model).")


@_group
def define_export_flags():
    """Flags of ``tools.export``."""
    define_data_flags()
    define_model_flags()
    define_model_path_flag()
    define_export_target_flags()
    flags.DEFINE_integer("version", None, "Version folder to write (default: the next "
                         "integer); an existing version is never overwritten.")
    flags.DEFINE_string("report", None, "A robustness report.json (tools.evaluate) to "
                        "carry in the export's assets.extra/.")


@_group
def define_tune_flags():
    """Flags of ``tools.tune`` (keras-tuner over solver tolerances); each trial trains
    with the model and recipe flags (``--epochs``, ``--learning_rate``, ...)."""
    define_data_flags()
    define_model_flags()
    define_recipe_flags()
    define_strategy_flag()
    define_output_flag()
    flags.DEFINE_multi_string(
        "tune_option", [], "NAME=VALUE, repeatable: an option of the search "
        "(tfnode.training.tune.TuneConfig): tuner=bayesian|hyperband|random, max_trials=10, "
        "executions_per_trial=1, objective=robust|clean|score (clean: validation accuracy; "
        "robust: under PGD with eps=0.1 and pgd_steps=10 on robust_examples=500; score: "
        "robust - nfe_weight * mean NFE / 100, nfe_weight=0.1), rtol_range=1e-5,1e-1 and "
        "atol_range=1e-5,1e-1 (log-scale LOW,HIGH), solvers=dopri5,tsit5 and "
        "widths=16,32 (choices; unset: not searched).")


@_group
def define_results_flags():
    """Flags of ``tools.report``."""
    flags.DEFINE_list("runs", [], "Run folders, files or globs: training exports "
                      "(metrics.json), evaluations (report.json), sweeps (sweep.json).")
    flags.DEFINE_string("output", "docs/paper.md", "The results page to write.")


def record(flag_values):
    """All flags of this module's definitions with their values, for metrics/report files."""
    names = [f.name for f in flag_values.get_key_flags_for_module(__name__)]
    names += [n for n in ("flagfile",) if n in flag_values]
    return {n: flag_values[n].value for n in sorted(set(names))}
