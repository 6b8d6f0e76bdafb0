"""Run inside bench/.venv-jupyter-ai (jupyter-ai needs langchain-core 0.3): time %%ai sagemaker-endpoint
against the local endpoint at argv[1], with raw boto3 in the same environment as the baseline; and
%load_ext jupyter_ai_magics against bare IPython. Prints JSON."""

import json
import os
import subprocess
import sys
import time

url, repeat = sys.argv[1], int(sys.argv[2])
os.environ.update(AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=url, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
                  AWS_DEFAULT_REGION="us-east-1")


def timed(fn, n):
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ipython(code):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "IPython", "--quick", "--no-banner", "-c", code], check=True,
                   capture_output=True)
    return time.perf_counter() - start


import boto3  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

client = boto3.client("sagemaker-runtime")
body = json.dumps({"inputs": "hi"}).encode()
raw = timed(lambda: client.invoke_endpoint(EndpointName="fast", Body=body)["Body"].read(), repeat)
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "jupyter_ai_magics")
line = ('sagemaker-endpoint:fast --region-name=us-east-1 --request-schema={"inputs":"<prompt>"} '
        "--response-path=[0].generated_text -f text")
answer = shell.run_cell_magic("ai", line, "hi")
assert "You said: hi" in getattr(answer, "text", str(answer)), answer
ai = timed(lambda: shell.run_cell_magic("ai", line, "hi"), max(5, repeat // 10))
bare = [ipython("pass") for _ in range(3)]
loaded = [ipython("%load_ext jupyter_ai_magics") for _ in range(3)]
print(json.dumps({"raw": raw, "ai": ai, "bare": bare, "loaded": loaded}))
