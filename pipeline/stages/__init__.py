"""One module per dvc.yaml stage, named as the stage; each is a leaf over the shared layers and never imports another.

Each exposes one plain function the CLI calls (`convbench <stage>`), and dvc.yaml runs the CLI.
"""
