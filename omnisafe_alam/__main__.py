"""``python -m omnisafe_alam``."""

from omnisafe_alam.cli import main

main()
