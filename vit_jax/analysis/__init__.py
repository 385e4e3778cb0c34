"""The paper's analyses of what a ViT learned (Sec. 4.5, Fig. 6-7, App. D.7-D.8).

Numbers (numpy in, numpy out, tested on constructed inputs):
  attention.attention_maps            per-layer attention probabilities of a forward pass
  rollout.attention_rollout           Abnar & Zuidema's rollout; output_to_patches
  attention_distance.mean_attention_distance   pixels per head and layer
  posemb.posemb_similarity            cosine similarity of position embeddings
  filters.filter_components           principal components of the patch filters
Figures: plots; command line: `python -m vit_jax.analysis --help`.
"""
