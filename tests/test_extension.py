"""%load_ext is cheap: registers the magics, imports neither boto3 nor langchain-core."""

from __future__ import annotations

import json
import subprocess
import sys


def test_load_ext_imports_neither_boto3_nor_langchain():
    code = (
        "import sys, json\n"
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\n"
        "ip.run_line_magic('load_ext', 'sm_magic')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'langchain_core'))\n"
        "print(json.dumps({'heavy': heavy, 'magic': 'sagemaker' in ip.magics_manager.magics['cell']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "magic": True}


def test_package_attributes_load_lazily():
    code = (
        "import sys, sm_magic\n"
        "assert 'boto3' not in sys.modules and 'langchain_core' not in sys.modules\n"
        "sm_magic.Session\n"
        "assert 'langchain_core' not in sys.modules\n"
        "sm_magic.SagemakerEndpoint\n"
        "assert 'langchain_core' in sys.modules\n"
        "print(sorted(sm_magic.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "SagemakerEndpoint" in out.stdout and "load_ipython_extension" in out.stdout
