"""Evaluation tasks, one small file each behind ``base.EvalTask`` (registered in ``registry.TASKS``)."""
