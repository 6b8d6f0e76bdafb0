"""Document question answering: stuff, map-reduce and refine, chosen by a token budget.

Independent of IPython and of boto3: it gets a function that answers one prompt and one that
answers many concurrently, so the magics, the panel and LangChain chains all use it.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sm_magic.chunks import Chunk, estimate_tokens
from sm_magic.errors import ConfigError, PartialAnswer, SageMakerError
from sm_magic.result import Result

DEFAULT_TEMPLATE = """Use the following pieces of context to answer the question at the end.

{context}

Question: {question}
Answer:"""

REFINE_TEMPLATE = """The original question is: {question}
The existing answer is: {answer}
Refine the existing answer (only if needed) with the context below; if the context does not
help, repeat the existing answer.

{context}

Question: {question}
Answer:"""

MODES = ("auto", "stuff", "map-reduce", "refine", "retrieve")
RETRIEVE_K = 4  # chunks sent to the LLM when retrieval is chosen without --retrieve K
EMBED_CHUNK_TOKENS = 200  # embedding models read ~256 tokens (all-MiniLM-L6-v2: 256 word pieces)
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text", ""}



@dataclass
class SourceText:
    """A loaded document: its text and where it came from."""

    text: str
    source: str


# -- inputs ----------------------------------------------------------------------------------------
def _read(path: Path) -> SourceText:
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise ConfigError(f"{path}: only text and Markdown files are read (got {path.suffix}).")
    try:
        return SourceText(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Could not read {path}: {e}") from None


def _looks_like_path(text: str) -> bool:
    if "\n" in text or len(text) > 1024:
        return False
    try:
        return any(c in text for c in "*?[") or Path(text).expanduser().exists()
    except OSError:  # e.g. a sentence longer than a file name may be
        return False


def load_documents(docs: Any) -> list[SourceText]:
    """A string, file path or glob, a langchain-core Document, or a list mixing these."""
    if isinstance(docs, str | Path):
        text = str(docs)
        if isinstance(docs, Path) or _looks_like_path(text):
            paths = sorted(glob.glob(str(Path(text).expanduser()), recursive=True))
            if not paths:
                raise ConfigError(f"No files match {text!r}, and no notebook variable has that name.",
                                  hint="Give --docs a variable (text, a list, Documents), a file path or a glob.")
            return [_read(Path(p)) for p in paths if Path(p).is_file()]
        return [SourceText(text, "text")]
    if hasattr(docs, "page_content"):
        metadata = getattr(docs, "metadata", None) or {}
        return [SourceText(docs.page_content, str(metadata.get("source") or metadata.get("id") or "document"))]
    if isinstance(docs, Iterable) and not isinstance(docs, bytes | dict):
        out: list[SourceText] = []
        for i, item in enumerate(docs):
            for doc in load_documents(item):
                if doc.source in ("text", "document"):
                    doc.source = f"doc{i}"
                out.append(doc)
        return out
    raise ConfigError(f"Cannot read documents from a {type(docs).__name__}: give text, Documents, paths or a glob.")


# -- splitting -------------------------------------------------------------------------------------
SEPARATORS = ["\n\n", r"(?<=[.!?])\s+", " ", ""]  # paragraphs, sentences, words, characters


def split(documents: list[SourceText], chunk_tokens: int, overlap_tokens: int = 0) -> list[Chunk]:
    """Chunks of at most ``chunk_tokens`` (estimated), on paragraph/sentence boundaries, with overlap
    (langchain-text-splitters' recursive splitter, measuring with :func:`estimate_tokens`)."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        separators=SEPARATORS, is_separator_regex=True, keep_separator="end", chunk_size=max(1, chunk_tokens),
        chunk_overlap=min(overlap_tokens, max(0, chunk_tokens - 1)), length_function=estimate_tokens,
        strip_whitespace=True)
    return [Chunk(text, doc.source, index) for doc in documents
            for index, text in enumerate(splitter.split_text(doc.text))]


# -- templates -------------------------------------------------------------------------------------
def template_text(template: Any) -> str:
    """A string or a langchain-core PromptTemplate with both {context} and {question}."""
    text = getattr(template, "template", template)
    if text is None:
        return DEFAULT_TEMPLATE
    if not isinstance(text, str):
        raise ConfigError(f"A QA template must be a string or a PromptTemplate, not {type(template).__name__}.")
    missing = [v for v in ("{context}", "{question}") if v not in text]
    if missing:
        raise ConfigError(f"The QA template lacks {' and '.join(missing)}: it needs both {{context}} and {{question}}.")
    return text


def fill_fields(template: str, **values: str) -> str:
    """Fill named fields only (other braces in the template are left alone)."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


# -- plans -----------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What a QA run sends: the mode and each call's prompt."""

    mode: str
    chunks: list[Chunk]
    prompts: list[str] = field(default_factory=list)  # stuff: one; map-reduce: the map step; refine: first
    reason: str = ""  # why this mode (auto)
    k: int = 0  # retrieve: chunks sent
    hits: list[Any] = field(default_factory=list)  # retrieve: the chunks found, with scores
    embedded: str = ""  # retrieve: what embedding cost (chunks embedded, cached)

    @property
    def calls(self) -> int:
        """LLM calls the plan makes (map-reduce: the map step)."""
        return len(self.prompts) if self.mode == "map-reduce" else (len(self.chunks) if self.mode == "refine" else 1)

    def describe(self) -> str:
        tokens = [estimate_tokens(p) for p in self.prompts]
        lines = [f"mode: {self.mode}" + (f" ({self.reason})" if self.reason else ""),
                 f"chunks: {len(self.chunks)} from {len({c.source for c in self.chunks})} document(s)"]
        if self.mode == "retrieve":
            lines.append(f"embeddings: {self.embedded}" if self.embedded else "")
            lines += [f"  {h.score:.3f}  {h.chunk.source}#{h.chunk.index}: {h.chunk.text[:100]!r}" for h in self.hits]
            if self.prompts:
                lines.append(f"1 call, ~{tokens[0]} tokens\n\n{self.prompts[0]}")
        elif self.mode == "stuff":
            lines.append(f"1 call, ~{tokens[0]} tokens\n\n{self.prompts[0]}")
        elif self.mode == "map-reduce":
            lines.append(f"map: {len(tokens)} concurrent calls, ~{min(tokens)}–{max(tokens)} tokens each; "
                         "then 1 reduce call (more if the partial answers overflow the context)")
        else:
            lines.append(f"refine: {len(self.chunks)} sequential calls, ~{max(tokens)} tokens each at most")
        return "\n".join(lines)


def make_plan(question: str, documents: list[SourceText], template: str, mode: str, context_tokens: int,
              max_new_tokens: int, retrieve_k: int | None = None) -> Plan:
    """Which mode answers ``question`` from ``documents`` within ``context_tokens``, and its chunks.

    ``retrieve_k``: an embeddings endpoint is there (``--embeddings``), so ``auto`` retrieves the
    ``retrieve_k`` best chunks instead of mapping over all of them when the documents do not fit."""
    if mode not in MODES:
        raise ConfigError(f"Unknown QA mode {mode!r}; choose one of {', '.join(MODES)}.")
    if not documents:
        raise ConfigError("No documents to answer from.")
    whole = [Chunk(d.text.strip(), d.source, 0) for d in documents]
    stuffed = fill_fields(template, context="\n\n".join(c.text for c in whole), question=question)
    budget = context_tokens - max_new_tokens
    fits = estimate_tokens(stuffed) <= budget
    if mode == "stuff" and not fits:
        raise ConfigError(f"--mode stuff would send ~{estimate_tokens(stuffed)} tokens in one call; the context "
                          f"leaves {budget} (context_tokens {context_tokens} - {max_new_tokens} new tokens).",
                          hint="Use --mode auto (map-reduce, or retrieval with --embeddings), or raise "
                               "--context-tokens if the endpoint takes more.")
    if mode == "stuff" or (mode == "auto" and fits):
        return Plan("stuff", whole, [stuffed], reason=f"~{estimate_tokens(stuffed)} tokens fit in {budget}"
                    if mode == "auto" else "")
    overhead = estimate_tokens(fill_fields(REFINE_TEMPLATE if mode == "refine" else template,
                                    context="", question=question, answer=" " * 400))
    room = budget - overhead
    if room < 64:
        raise ConfigError(f"The context size ({context_tokens} tokens) leaves no room for documents after the "
                          f"template, question and {max_new_tokens} new tokens; raise --context-tokens.")
    if mode == "retrieve" or (mode == "auto" and retrieve_k):
        k = retrieve_k or RETRIEVE_K
        size = max(32, min(room // k, EMBED_CHUNK_TOKENS))
        why = (f"~{estimate_tokens(stuffed)} tokens do not fit in {budget}; an embeddings endpoint is set, so the "
               f"{k} most relevant chunks are sent" if mode == "auto" else "")
        return Plan("retrieve", split(documents, size, overlap_tokens=min(32, size // 8)), reason=why, k=k)
    chunks = split(documents, room, overlap_tokens=min(64, room // 10))
    reason = (f"~{estimate_tokens(stuffed)} tokens do not fit in {budget}; no embeddings endpoint (--embeddings) "
              "for retrieval" if mode == "auto" else "")
    mode = "map-reduce" if mode == "auto" else mode
    if mode == "map-reduce":
        return Plan(mode, chunks, [fill_fields(template, context=c.text, question=question) for c in chunks],
                    reason=reason)
    return Plan(mode, chunks, [fill_fields(template, context=chunks[0].text, question=question)])


# -- running -----------------------------------------------------------------------------------------
Ask = Callable[[str], Result]
AskMany = Callable[[list[str]], list[Result | SageMakerError]]


def answer(question: str, docs: Any, ask: Ask, ask_many: AskMany, *, template: Any = None, mode: str = "auto",
           context_tokens: int = 2048, max_new_tokens: int = 256, allow_partial: bool = False,
           plan: Plan | None = None) -> Result:
    """Answer ``question`` from ``docs``; the Result's ``sources`` lists the chunks used.

    If map calls fail, :class:`PartialAnswer` is raised (the partial answer on its ``result``) unless
    ``allow_partial``; then the Result says ``partial`` and lists the failed chunks.
    """
    text = template_text(template)
    plan = plan or make_plan(question.strip(), load_documents(docs), text, mode, context_tokens, max_new_tokens)
    if plan.mode in ("stuff", "retrieve"):
        result = ask(plan.prompts[0])
    elif plan.mode == "refine":
        result = _refine(question.strip(), plan, ask)
    else:
        result = _map_reduce(question.strip(), plan, text, ask, ask_many, context_tokens - max_new_tokens,
                             allow_partial)
    failures = result.data.get("map_failures", []) if isinstance(result.data, dict) else []
    used = result.data.pop("used", plan.chunks) if isinstance(result.data, dict) else plan.chunks
    result.sources = ([h.chunk.as_source(h.score) for h in plan.hits] if plan.mode == "retrieve"
                      else [c.as_source() for c in used])
    result.data = {"mode": plan.mode, **({"embeddings": plan.embedded} if plan.embedded else {}),
                   **(result.data if isinstance(result.data, dict) else {})}
    result.partial = bool(failures)
    return result


def _partial(plan: Plan, failures: list[str], used: int) -> PartialAnswer:
    shown = "; ".join(failures[:3])
    return PartialAnswer(
        f"{len(failures)} of {len(plan.chunks)} document chunks failed, so an answer would rest on {used} chunks "
        f"only. First errors: {shown}.",
        hint="Re-run the cell: the chunks that finished come from the journal and only the failed ones are "
             "called again. Or add --allow-partial to accept an answer from the rest (it will say it is partial).",
        failures=failures)


def _reason(error: Any) -> str:
    return f"{type(error).__name__}: {error.message}" if isinstance(error, SageMakerError) else str(error)


def _refine(question: str, plan: Plan, ask: Ask) -> Result:
    result = ask(plan.prompts[0])
    for chunk in plan.chunks[1:]:
        result = ask(fill_fields(REFINE_TEMPLATE, question=question, answer=result.text.strip(), context=chunk.text))
    return result


def _map_reduce(question: str, plan: Plan, template: str, ask: Ask, ask_many: AskMany, budget: int,
                allow_partial: bool) -> Result:
    outcomes = ask_many(plan.prompts)
    partial = [(c, o) for c, o in zip(plan.chunks, outcomes, strict=True) if isinstance(o, Result)]
    failed = [(c, o) for c, o in zip(plan.chunks, outcomes, strict=True) if not isinstance(o, Result)]
    if not partial:
        raise failed[0][1]  # type: ignore[misc]
    if failed and not allow_partial:  # no reduce calls for an answer nobody asked for
        raise _partial(plan, [f"{c.source}#{c.index}: {_reason(e)}" for c, e in failed], len(partial))
    notes = [f"[{c.source}#{c.index}] {r.text.strip()}" for c, r in partial]
    # Collapse the partial answers until they fit one reduce call.
    def too_long(notes: list[str]) -> bool:
        return estimate_tokens(fill_fields(template, context="\n\n".join(notes), question=question)) > budget

    while too_long(notes) and len(notes) > 1:
        groups, current = [], []
        for note in notes:
            combined = fill_fields(template, context="\n\n".join([*current, note]), question=question)
            if current and estimate_tokens(combined) > budget:
                groups.append(current)
                current = []
            current.append(note)
        groups.append(current)
        if len(groups) == len(notes):  # no note fits with another: keep the first ones only
            notes = notes[: max(1, len(notes) // 2)]
            continue
        collapsed = ask_many([fill_fields(template, context="\n\n".join(g), question=question) for g in groups])
        notes = [r.text.strip() for r in collapsed if isinstance(r, Result)]
    result = ask(fill_fields(template, context="\n\n".join(notes), question=question))
    result.data = {"map_answers": [r.text for _, r in partial], "used": [c for c, _ in partial],
                   "map_failures": [f"{c.source}#{c.index}: {_reason(e)}" for c, e in failed]}
    return result
