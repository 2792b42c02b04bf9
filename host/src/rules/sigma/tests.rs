//! Sigma loading: refusals, idle logsources, correlations.
