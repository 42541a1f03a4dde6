"""Sub-commands of the ``cellbench`` CLI, one module each (see ``cellbench.cli``)."""
