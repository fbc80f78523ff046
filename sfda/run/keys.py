"""Names of logged values that the run's callbacks read and the metrics write."""

LABEL_FREE = "label_free/"  # the prefix of every label-free value (validators and the class marginal)
MARGINAL_ENTROPY = "marginal_entropy"  # logged as label_free/marginal_entropy; not a validator
