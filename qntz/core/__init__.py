"""The core: the pipeline file, plan, runner, step API and registry. It names no step kind."""
