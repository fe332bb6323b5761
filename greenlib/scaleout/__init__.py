"""Scale-out: one run on several GPUs (DDP under torchrun) and the experiment grid over GPUs and
Slurm nodes (submitit). See docs/scale-out.md.

    torchrun --standalone --nproc_per_node 2 -m greenlib.scaleout.ddp --profile quick --model resnet20
    python -m greenlib.scaleout.grid --profile quick --section baselines -p "models=['resnet20']" --gpus 2

Modules: :mod:`.ddp` (``run_ddp_baseline``: every rank traces its own GPU, rank 0 stores the run),
:mod:`.grid` (``run_grid``, ``make_plan``: cells, shared runs first, through submitit's local or Slurm
executor, one run per GPU at a time), :mod:`.cells` (how a notebook section becomes cells),
:mod:`.carry` (checkpoints and weights in checked chunks, for a campaign that spans machines),
:mod:`greenlib.results` (``LockingStore``: one process computes a run, the others wait). A grid's cost is
priced by :mod:`greenlib.cost` (``grid --dry-run --estimate-from quick``).

Nothing here is imported by ``greenlib`` itself: the notebooks run on one GPU without it.
"""
