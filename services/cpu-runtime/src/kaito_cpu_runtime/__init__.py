"""KAITO's CPU runtime: the fast paths the inference service and the RAG engine share.

Prepacked oneDNN linears (:mod:`.linear`), the CPU thread policy (:mod:`.threads`), the
lean Llama-family decoder (:mod:`.llama_decoder`) and BERT encoder (:mod:`.bert_encoder`),
the in-place KV cache and a batch's row operations (:mod:`.kvcache`), the decoder's
attention (:mod:`.attention`) and weight plan (:mod:`.decoder_weights`), packed prefill
passes (:mod:`.prefill_passes`), prefix caching (:mod:`.prefix_cache`), token sampling
(:mod:`.sampling`) and heap trimming (:mod:`.memory`). Import the modules themselves:
this package imports nothing, so :func:`.threads.configure_cpu_threads` can run before
torch is first imported.
"""
