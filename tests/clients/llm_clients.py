#!/usr/bin/env python3
"""The official Ollama and OpenAI Python clients (PyPI) against arasuld's
front door, as an integrator would point them: `BASE/ollama` and
`BASE/ollama/v1` with an API key. Run by tests/it/daemon/frontdoor.rs.

Usage: llm_clients.py BASE KEY use      # prints one JSON object of results
       llm_clients.py BASE KEY refused  # prints the status each client got

Nothing here asserts: the Rust test reads the JSON and decides.
"""

import json
import sys

import ollama
import openai

CHAT_MODEL = "llama3.2:1b"
EMBED_MODEL = "nomic-embed-text"
QUESTION = "What is the capital of France?"


def use(base, key):
    out = {}
    o = ollama.Client(host=f"{base}/ollama", headers={"Authorization": f"Bearer {key}"})
    out["ollama_models"] = sorted(m.model for m in o.list().models)
    msg = [{"role": "user", "content": QUESTION}]
    out["ollama_chat"] = o.chat(model=CHAT_MODEL, messages=msg).message.content
    out["ollama_chat_stream"] = [
        part.message.content for part in o.chat(model=CHAT_MODEL, messages=msg, stream=True)
    ]
    emb = o.embed(model=EMBED_MODEL, input=["first text", "second text"])
    out["ollama_embed_dims"] = [len(e) for e in emb.embeddings]

    c = openai.OpenAI(base_url=f"{base}/ollama/v1", api_key=key, max_retries=0)
    out["openai_models"] = sorted(m.id for m in c.models.list())
    r = c.chat.completions.create(model=CHAT_MODEL, messages=msg)
    out["openai_chat"] = r.choices[0].message.content
    stream = c.chat.completions.create(model=CHAT_MODEL, messages=msg, stream=True)
    out["openai_chat_stream"] = [
        ch.choices[0].delta.content or "" for ch in stream if ch.choices
    ]
    e = c.embeddings.create(model=EMBED_MODEL, input=["first text", "second text"])
    out["openai_embed_dims"] = [len(d.embedding) for d in e.data]
    # The same vector both ways (OpenAI's client asks for base64 and decodes it).
    out["same_vector"] = max(
        abs(a - b) for a, b in zip(emb.embeddings[0], e.data[0].embedding)
    ) < 1e-5
    print(json.dumps(out))


def refused(base, key):
    out = {}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        ollama.Client(host=f"{base}/ollama", headers=headers).list()
        out["ollama"] = 200
    except ollama.ResponseError as e:
        out["ollama"] = e.status_code
    try:
        openai.OpenAI(
            base_url=f"{base}/ollama/v1", api_key=key or "none", max_retries=0
        ).models.list()
        out["openai"] = 200
    except openai.APIStatusError as e:
        out["openai"] = e.status_code
    print(json.dumps(out))


if __name__ == "__main__":
    base, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    {"use": use, "refused": refused}[mode](base, key)
