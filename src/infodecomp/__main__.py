"""``python -m infodecomp`` (and ``accelerate launch -m infodecomp eval ...``)."""

from ._entry import main

raise SystemExit(main())
