"""Stage 2, annotation: annotators (the label-writing teachers) and what they compute.

An *annotator* writes labels for planning samples: reasoning, meta-action, per-agent risk. It is
distinct from the *planning teacher* (:mod:`dsdrive.distilldrive`), a planner distilled at feature
level. ``dsdrive annotate --annotator NAME`` (``--teacher`` is the same flag) runs one.

Modules:
    annotators/    rule (privileged, from ground truth), qwen_vl (local Qwen2.5-VL), openai_api
                   (any OpenAI-compatible server, vLLM included); base: the Annotator interface
    annotate       the resumable, sharded runner (``dsdrive annotate`` / ``dsdrive merge``)
    schema         the Annotation every annotator fills (pydantic)
    store          annotation shards on disk (crash-safe, resumable)
    risk           rule-based per-agent risk (RSD's risk semantics)
    meta_action    meta-actions from a trajectory (GPT-Driver / Agent-Driver classes)
    reasoning      jinja2 rendering of reasoning text and the student prompt (prompts/)
    bev_render     BEV images shown to VLM annotators
    scene_context  nearest agents and their aliases, shared by prompts and BEV images
    pv_bev_matching  perspective-view boxes matched to BEV agents (RSD's PV -> BEV)
"""
