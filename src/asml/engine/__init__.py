"""Training around the core: for now the quick demo loop; the full trainer comes with the CLI."""
