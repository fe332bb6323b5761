"""``python -m greenlib.data download cifar100`` / ``check cifar100``: see :func:`greenlib.data.main`."""
from . import main

raise SystemExit(main())
