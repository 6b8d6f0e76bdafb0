"""LangChain classes: the seed's examples unchanged, invoke/stream/batch/ainvoke, the chat model."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import PromptTemplate

from sm_magic import ChatSagemakerEndpoint, SagemakerEndpoint
from sm_magic.errors import EndpointNotFound, ModelError
from sm_magic.local import Fault
from tests.conftest import SEED_PROMPT
from tests.seed_examples import CROSS_ACCOUNT, PREAMBLE, PROFILE

EXPECTED = "Therefore, Peter stayed with her at the hospital for 3 days without leaving."


def test_seed_cross_account_example_runs_unchanged(aws_env, moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server)
    namespace: dict = {}
    exec(PREAMBLE + CROSS_ACCOUNT, namespace)
    assert namespace["answer"] == {"output_text": EXPECTED}
    # the external client's assumed-role credentials were the ones used
    assert namespace["client"]._get_credentials().access_key == namespace["response"]["Credentials"]["AccessKeyId"]


def test_seed_profile_example_runs_unchanged(aws_env, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "config").write_text("[profile credentials-profile-name]\nregion = us-west-2\n")
    (tmp_path / "credentials").write_text(
        "[credentials-profile-name]\naws_access_key_id = profile-key\naws_secret_access_key = profile-secret\n")
    namespace: dict = {}
    exec(PREAMBLE + PROFILE, namespace)
    assert namespace["answer"] == {"output_text": EXPECTED}


def test_seed_with_the_real_model_answers_3_days(model_endpoint, monkeypatch, tmp_path):
    for key, value in model_endpoint.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    (tmp_path / "credentials").write_text(
        "[credentials-profile-name]\naws_access_key_id = profile-key\naws_secret_access_key = profile-secret\n")
    namespace: dict = {}
    exec(PREAMBLE + PROFILE, namespace)
    assert "3 days" in namespace["answer"]["output_text"]


@pytest.fixture
def local_llm(session):
    return SagemakerEndpoint(endpoint_name="tgi", session=session, content_handler="tgi")


def test_invoke_stream_batch_ainvoke(local_llm):
    assert local_llm.invoke(SEED_PROMPT) == EXPECTED
    chunks = list(local_llm.stream(SEED_PROMPT))
    assert "".join(chunks) == EXPECTED and len(chunks) > 5
    assert local_llm.batch([SEED_PROMPT, "hello"], config={"max_concurrency": 2}) == [EXPECTED, "You said: hello"]
    assert asyncio.run(local_llm.ainvoke("hello")) == "You said: hello"


def test_prompt_pipe_llm_chain(local_llm):
    chain = PromptTemplate.from_template("{context}\nQuestion: {question}") | local_llm
    assert chain.invoke({"context": "Peter stayed 3 days.", "question": "How long?"}) == "Peter stayed 3 days."


def test_streaming_flag_and_stop_words(local_llm):
    local_llm.streaming = True
    assert local_llm.invoke(SEED_PROMPT, stop=[" hospital"]) == "Therefore, Peter stayed with her at the"


def test_inference_component_and_endpoint_kwargs(session):
    chat = ChatSagemakerEndpoint(endpoint_name="components", session=session, inference_component_name="ic-small")
    assert chat.invoke("hi").content == "You said: hi"
    llm = SagemakerEndpoint(endpoint_name="multi", session=session, content_handler="tgi",
                            endpoint_kwargs={"TargetVariant": "green"})
    assert llm.invoke_result("hi").variant == "green"


def test_errors_keep_their_types(local, session):
    with pytest.raises(EndpointNotFound):
        SagemakerEndpoint(endpoint_name="missing", session=session).invoke("hi")
    local.inject("faulty", Fault("model-error", status=400, message="bad prompt"))
    with pytest.raises(ModelError) as info:
        SagemakerEndpoint(endpoint_name="faulty", session=session).invoke("hi")
    assert info.value.original_message == "bad prompt"


def test_chat_model_invoke_and_stream(session):
    chat = ChatSagemakerEndpoint(endpoint_name="tgi-messages", session=session)
    messages = [SystemMessage(content="Be brief."), HumanMessage(content="Peter stayed 3 days.\nQuestion: How long?")]
    reply = chat.invoke(messages)
    assert reply.content == "Peter stayed 3 days."
    assert reply.response_metadata["usage"]["completion_tokens"] == 4
    chunks = list(chat.stream(messages))
    assert "".join(c.content for c in chunks) == "Peter stayed 3 days."
    assert len([c for c in chunks if c.content]) == 4  # one per token (LangChain adds an empty last chunk)


def test_chat_model_on_lmi_chat(session):
    chat = ChatSagemakerEndpoint(endpoint_name="lmi-chat", session=session, content_handler="lmi-chat")
    assert "".join(c.content for c in chat.stream("ping")) == "You said: ping"


def test_real_model_streams_token_by_token(model_endpoint):
    from sm_magic.session import Session

    llm = SagemakerEndpoint(endpoint_name="lmi", session=Session.local(model_endpoint.url), content_handler="lmi",
                            model_kwargs={"temperature": 1e-10, "max_new_tokens": 48})
    chunks = list(llm.stream(SEED_PROMPT))
    assert len(chunks) > 5
    assert "3 days" in "".join(chunks)


def test_batch_runs_concurrently(session, in_flight):
    """LangChain's BaseLLM.batch is sequential; ours keeps up to max_concurrency calls in flight."""
    llm = SagemakerEndpoint(endpoint_name="slow", session=session, content_handler="tgi")
    with in_flight("slow") as peak:
        answers = llm.batch([f"q{i}" for i in range(12)], config={"max_concurrency": 4})
    assert answers == [f"You said: q{i}" for i in range(12)]
    assert 1 < peak[0] <= 4
