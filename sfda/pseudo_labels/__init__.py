"""The shared pseudo-label engine: banks, kNN, clustering, selection, EMA teacher, priors.

Depends on torch only; every method builds its pseudo-labels from these pieces.
"""

from .bank import TargetBank
from .clustering import augment_and_normalise, centroid_labels, kmeans
from .distributed import (
    check_identical_across_ranks,
    gather_rows,
    gather_with_grad,
    masked_global_mean,
    one_row_per_index,
    world_size,
)
from .knn import KnnBackend, check_knn_backend, cosine_knn, cosine_knn_faiss, faiss_available
from .priors import (
    ConstantSizes,
    ImageSizes,
    PriorProvider,
    SourceEstimate,
    TrueSizes,
    class_fractions,
    class_marginal,
    estimated_prior,
    mean_size_where_present,
    prior_from_sizes,
    uniform_prior,
)
from .selection import (
    class_balanced_mask,
    confidence_mask,
    entropy,
    entropy_2means_threshold,
    normalised_entropy,
    unknown_by_entropy,
    unknown_by_entropy_2means,
)
from .teacher import EMATeacher
from .universal import (
    GLC_COEFFICIENTS,
    candidate_cluster_counts,
    one_vs_all_pseudo_labels,
    select_num_clusters,
    silhouette_score,
)

__all__ = [
    "TargetBank", "check_identical_across_ranks", "augment_and_normalise", "centroid_labels", "kmeans",
    "gather_rows", "gather_with_grad", "masked_global_mean", "one_row_per_index",
    "world_size", "ConstantSizes", "ImageSizes", "PriorProvider", "SourceEstimate", "TrueSizes",
    "class_fractions",
    "prior_from_sizes", "mean_size_where_present", "cosine_knn", "cosine_knn_faiss", "faiss_available",
    "KnnBackend", "check_knn_backend", "class_marginal", "estimated_prior",
    "uniform_prior", "class_balanced_mask", "confidence_mask", "entropy", "normalised_entropy",
    "unknown_by_entropy", "unknown_by_entropy_2means", "entropy_2means_threshold", "EMATeacher",
    "GLC_COEFFICIENTS", "candidate_cluster_counts", "one_vs_all_pseudo_labels", "select_num_clusters",
    "silhouette_score",
]
