"""shared/ is framework-free: it imports and runs its CLI/report with torch and tensorflow unavailable."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"torch", "torchvision", "torch_pruning", "tensorflow", "tf_keras", "keras",
              "tensorflow_model_optimization", "ai_edge_litert"}

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {names!r}:
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_no_framework_import_statements_in_shared():
    offenders = []
    for path in sorted((ROOT / "shared").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FRAMEWORKS | {"pytorch_impl", "tensorflow_impl"}]
    assert offenders == []


def test_shared_imports_with_frameworks_blocked():
    modules = sorted(p.stem for p in (ROOT / "shared").glob("*.py") if p.stem != "__main__")
    code = BLOCKER.format(names=FRAMEWORKS) + "".join(f"import shared.{m}\n" for m in modules) + (
        "from shared import specs, presets, data\n"
        "assert specs.count_params(specs.plan('vgg16')) == 14991946\n"
        "d = data.synthetic(n_train=100, n_val=20, n_test=50)\n"
        "assert d.train.x.shape == (100, 32, 32, 3)\n"
        "print('ok', len(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_suites_do_not_import_each_other():
    for own, other in (("pytorch_impl", "tensorflow_impl"), ("tensorflow_impl", "pytorch_impl")):
        for path in sorted((ROOT / own).rglob("*.py")):
            text = path.read_text()
            assert f"import {other}" not in text and f"from {other}" not in text, path
