"""`python -m workbench ...` == the `workbench` command (child processes use the current interpreter this way)."""
import sys

from workbench.cli import main

sys.exit(main())
