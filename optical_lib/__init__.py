"""OPTICAL study library: optimal-transport distillation for cross-lingual retrieval.

Modules (one concept each): ``paths`` (where data lives), ``fetch`` (checksums and
downloads), ``models`` (the encoder family), ``ot`` (Sinkhorn and the OPTICAL loss),
``data`` (loaders and diversity sampling), ``retrieval`` (encode and search),
``evaluate`` (metrics and statistics), ``distill`` (training), ``grid`` (the papermill
sweep) and ``plots`` (figures).
"""

__version__ = "0.1.0"
