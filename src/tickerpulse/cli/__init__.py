"""One thin module per verb. Each module defines `register(app)`; main discovers them, so adding a verb
never touches main.py. Modules import only typer/rich at the top; heavy imports go inside the commands."""
