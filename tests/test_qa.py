"""Document QA: stuff, map-reduce (concurrent map), refine, templates, dry runs, load_qa_chain."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.prompts import PromptTemplate

from sm_magic import SagemakerEndpoint, load_qa_chain
from sm_magic.chunks import estimate_tokens
from sm_magic.errors import ConfigError, ModelError, PartialAnswer
from sm_magic.local import Fault
from sm_magic.qa import DEFAULT_TEMPLATE, load_documents, make_plan, split, template_text
from tests.conftest import SEED_CONTEXT, SEED_QUESTION

FILLER = ("The committee reviewed the quarterly budget and discussed the parking arrangements. "
          "Several members asked about the new cafeteria menu and the library opening hours. ")


def corpus(n: int = 200) -> list[str]:
    """n documents; only one knows the answer."""
    docs = [f"Memo {i}. " + FILLER * 2 for i in range(n)]
    docs[n * 2 // 3] = f"Memo {n * 2 // 3}. The archive moved to the north wing on 4 March after the flood."
    return docs


def test_inputs_strings_documents_paths_and_globs(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\nAlpha text.")
    (tmp_path / "b.txt").write_text("Beta text.")
    (tmp_path / "c.pdf").write_bytes(b"%PDF")
    docs = load_documents(["inline text", Document(page_content="doc text", metadata={"source": "s.md"}),
                           str(tmp_path / "*.md"), tmp_path / "b.txt"])
    assert [d.source for d in docs] == ["doc0", "s.md", str(tmp_path / "a.md"), str(tmp_path / "b.txt")]
    with pytest.raises(ConfigError, match="only text and Markdown"):
        load_documents(str(tmp_path / "c.pdf"))
    with pytest.raises(ConfigError, match="No files match"):
        load_documents(str(tmp_path / "*.rst"))


def test_split_respects_budget_boundaries_and_overlap():
    text = "\n\n".join(" ".join(f"Sentence {p}.{i} ends here." for i in range(30)) for p in range(3))
    chunks = split(load_documents(text), chunk_tokens=100, overlap_tokens=20)
    assert len(chunks) > 5
    assert all(c.tokens <= 100 for c in chunks)
    assert all(c.text.startswith("Sentence") and c.text.endswith("ends here.") for c in chunks)  # boundaries
    last_sentence = chunks[0].text.rsplit("Sentence", 1)[1]
    assert last_sentence in chunks[1].text[:100]  # the overlap is carried over
    assert "here. Sentence" in chunks[0].text  # sentences of one paragraph stay on one line


def test_templates_must_have_context_and_question():
    assert template_text(None) == DEFAULT_TEMPLATE
    assert "{context}" in template_text(PromptTemplate.from_template("{context} Q: {question}"))
    with pytest.raises(ConfigError, match=r"lacks \{question\}"):
        template_text("Context: {context}")


def test_auto_mode_chooses_by_token_budget():
    small = make_plan(SEED_QUESTION, load_documents(SEED_CONTEXT), DEFAULT_TEMPLATE, "auto", 2048, 256)
    assert small.mode == "stuff" and SEED_CONTEXT.strip() in small.prompts[0]
    big = make_plan("Where is the archive?", load_documents(corpus()), DEFAULT_TEMPLATE, "auto", 1024, 128)
    assert big.mode == "map-reduce"
    assert all(estimate_tokens(p) <= 1024 - 128 for p in big.prompts)
    assert "concurrent calls" in big.describe()


def test_stuff_answers_the_seed_question(ip):
    ip.user_ns["docs"] = [Document(page_content=SEED_CONTEXT)]
    result = ip.run_cell_magic("sagemaker", "tgi --docs docs", SEED_QUESTION)
    assert "3 days" in result.text
    assert result.sources[0]["source"] == "doc0"
    assert "sources: doc0" in result._repr_mimebundle_()[0]["text/markdown"]


def test_map_reduce_over_200_documents_runs_the_map_step_concurrently(ip, in_flight):
    ip.user_ns["memos"] = corpus()
    with in_flight("slow") as peak:
        result = ip.run_cell_magic("sagemaker", "slow --docs memos --context-tokens 1024 --concurrency 8 --handler tgi",
                                   "Where did the archive move?")
    assert result.data["mode"] == "map-reduce"
    assert "north wing" in result.text
    assert len(result.data["map_answers"]) == len({s["source"] for s in result.sources}) <= 200
    assert peak[0] > 1  # the map step overlapped


def test_refine_mode(ip):
    ip.user_ns["memos"] = corpus(6)
    line = "tgi --docs memos --mode refine --context-tokens 400 --max-new-tokens 48 --handler tgi"
    result = ip.run_cell_magic("sagemaker", line, "Where did the archive move?")
    assert result.data["mode"] == "refine"
    assert "north wing" in result.text


def test_user_template_and_glob(ip, tmp_path):
    (tmp_path / "notes.md").write_text(SEED_CONTEXT)
    ip.user_ns["qa_prompt"] = PromptTemplate.from_template("Facts:\n{context}\nQuestion: {question}\nAnswer:")
    result = ip.run_cell_magic("sagemaker", f"tgi --docs {tmp_path}/*.md --template qa_prompt", SEED_QUESTION)
    assert "3 days" in result.text and result.request.body.startswith(b'{"inputs": "Facts:')
    ip.user_ns["bad"] = "no variables here"
    with pytest.raises(ConfigError, match="lacks"):
        ip.run_cell_magic("sagemaker", f"tgi --docs {tmp_path}/*.md --template bad", SEED_QUESTION)


def test_dry_run_shows_the_plan_without_sending(ip, local):
    ip.user_ns["memos"] = corpus()
    before = sum(local.calls.values())
    plan = ip.run_cell_magic("sagemaker", "tgi --docs memos --dry-run --context-tokens 1024 --handler tgi", "Where?")
    assert "mode: map-reduce" in repr(plan) and "concurrent calls" in repr(plan)
    stuffed = ip.run_cell_magic("sagemaker", "tgi --docs memos --dry-run --mode stuff --handler tgi "
                                "--context-tokens 100000", "Where?")
    assert "Memo 199" in repr(stuffed)
    with pytest.raises(ConfigError, match="--mode stuff would send ~22773 tokens"):  # refused, not sent
        ip.run_cell_magic("sagemaker", "tgi --docs memos --mode stuff --handler tgi", "Where?")
    assert sum(local.calls.values()) == before


def test_map_step_keeps_going_when_some_chunks_fail(session, local):
    llm = SagemakerEndpoint(endpoint_name="faulty", session=session, content_handler="tgi")
    local.inject("faulty", Fault("model-error", times=3))
    chain = load_qa_chain(llm, chain_type="map_reduce", context_tokens=1024, max_concurrency=1)
    with pytest.raises(PartialAnswer, match="3 of 40 document chunks failed"):  # never a whole-looking answer
        chain.invoke({"input_documents": corpus(40), "question": "Where did the archive move?"})
    local.inject("faulty", Fault("model-error", times=3))
    chain.allow_partial = True
    out = chain.invoke({"input_documents": corpus(40), "question": "Where did the archive move?"})
    assert "north wing" in out["output_text"]  # answered from the chunks that succeeded
    assert len(out["map_failures"]) == 3 and out["partial"] and len(out["sources"]) == 37
    local.inject("faulty", Fault("model-error", times=-1))
    with pytest.raises(ModelError):
        chain.invoke({"input_documents": corpus(10), "question": "Where?"})


def test_load_qa_chain_is_callable_and_a_runnable(session):
    llm = SagemakerEndpoint(endpoint_name="tgi", session=session, content_handler="tgi")
    prompt = PromptTemplate(template=DEFAULT_TEMPLATE, input_variables=["context", "question"])
    chain = load_qa_chain(llm=llm, chain_type="stuff", prompt=prompt)
    docs = [Document(page_content=SEED_CONTEXT)]
    assert chain({"input_documents": docs, "question": SEED_QUESTION}, return_only_outputs=True) == {
        "output_text": "Therefore, Peter stayed with her at the hospital for 3 days without leaving."}
    full = chain({"input_documents": docs, "question": SEED_QUESTION})
    assert full["question"] == SEED_QUESTION and "output_text" in full
    assert "3 days" in chain.invoke({"input_documents": docs, "question": SEED_QUESTION})["output_text"]
    with pytest.raises(ConfigError, match="chain_type"):
        load_qa_chain(llm, chain_type="magic")


def test_real_model_answers_the_seed_question_with_document_qa(model_endpoint):
    from sm_magic.session import Session

    llm = SagemakerEndpoint(endpoint_name="endpoint-name", session=Session.local(model_endpoint.url),
                            content_handler="tgi", model_kwargs={"temperature": 1e-10, "max_new_tokens": 48})
    chain = load_qa_chain(llm, chain_type="stuff")
    out = chain({"input_documents": [Document(page_content=SEED_CONTEXT)], "question": SEED_QUESTION},
                return_only_outputs=True)
    assert "3 days" in out["output_text"]
