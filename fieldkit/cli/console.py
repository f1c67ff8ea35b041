"""Rich consoles shared by the commands: results on stdout, problems on stderr."""

from rich import get_console
from rich.console import Console

console = get_console()  # rich's own: progress bars (fieldkit.progress) and the driver's prints share it
err_console = Console(stderr=True)
