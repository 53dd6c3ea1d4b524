"""Built-in gating templates (JSON), installed as ``immunoprofile.builtin_templates``."""
