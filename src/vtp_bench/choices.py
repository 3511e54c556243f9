"""The fixed sets of values config keys may take, in one module with no dependencies, so that the config schema (and
``config.choice``, which every method's ``Config`` uses) imports neither torch, PyAV nor any model code. The modules
that act on a value import its set from here."""

SAMPLINGS = ("uniform", "rand", "rand_fit")  # data.train_sampling / eval_sampling (data/video.py)
MIX_MODES = ("round_robin", "proportional")  # data.mix (data/samplers.py)
GATHER_MODES = ("global", "none")  # loss.gather (losses.py)
OPTIMIZER_NAMES = ("adamw", "adam")  # optim.name (optim.py)
SCHEDULERS = ("constant", "cosine", "step")  # optim.scheduler (optim.py)
TEMPORAL_FIXES = ("zeros", "interp", "bilinear")  # init.temporal_fix (models/checkpoints.py)
LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")  # run.loggers (runlog.py)
