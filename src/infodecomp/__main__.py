"""``python -m infodecomp`` (and ``accelerate launch -m infodecomp eval ...``)."""

from .cli import main

raise SystemExit(main())
