"""The maths stands alone: importing nst_engine.core loads torch and Pillow, not the service's stack."""
import subprocess
import sys

SERVICE_MODULES = ("aiohttp", "prometheus_client", "discord", "nats", "nst_engine.service", "nst_engine.images")


def test_core_imports_nothing_of_the_service():
    code = (
        "import sys, nst_engine.core\n"
        f"print(','.join(m for m in {SERVICE_MODULES!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"nst_engine.core pulled in: {out.stdout.strip()}"


def test_core_modules_use_torch_pillow_and_the_stdlib_only():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import nst_engine.core.optimize, nst_engine.core.colour, nst_engine.core.schedule\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "stdlib = set(sys.stdlib_module_names)\n"
        "print(sorted(m for m in new - stdlib if not m.startswith('_')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    third_party = eval(out.stdout)  # a list literal printed above
    # torch's own dependencies come along with it; what matters is that nothing of ours beyond core,
    # and no web, broker or Discord library, is loaded.
    assert "aiohttp" not in third_party and "discord" not in third_party and "nats" not in third_party
    assert {"torch", "PIL", "nst_engine"} <= set(third_party)
