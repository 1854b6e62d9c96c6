"""Training stage: the CSL-TAL network, its augmentation and loss, feature sets, training, run folders.

Typical use (each name from the module that owns it)::

    from vadpipe.model.config import TrainConfig
    from vadpipe.model.run import load_run
    from vadpipe.model.train import train

    run_dir = train("vadpipe-work/features", out_dir="vadpipe-work/runs/r1", config=TrainConfig())  # the paper's
    model = load_run(run_dir).model

The named recipes (training and calibration together) are `vadpipe.recipes`.
"""
