"""OPTICAL study library: optimal-transport distillation for cross-lingual retrieval.

Modules (one concept each): ``paths`` (where data lives), ``fetch`` (checksums and
downloads), ``models`` (the encoder family), ``ot`` (Sinkhorn and the OPTICAL loss),
``data`` (loaders and diversity sampling), ``retrieval`` (encode and search),
``evaluate`` (metrics and statistics), ``distill`` (training), ``experiment`` (one setting
of the study), ``tune`` (hyper-parameters on development languages), ``grid`` (the papermill
sweep), ``analysis`` (tables, tests and the answer from result files) and ``plots`` (figures).
"""

__version__ = "0.1.0"
