import subprocess
import sys


def test_the_trainer_loads_no_django():
    """training/dpo runs alone under torchrun on a GPU box: none of it, the KL checks' sampler
    included, may pull Django in."""
    code = (
        "import sys, training.dpo.__main__, training.dpo.kl, training.dpo.loop; "
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
