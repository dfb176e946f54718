"""`python -m e2a` is the `e2a` command."""

from e2a.cli.main import main

raise SystemExit(main())
