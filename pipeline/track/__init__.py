"""The trackers (``TRACK``): TensorBoard (``board``) and the local MLflow store
(``mlflow_store``). The stages write their own summaries through them (``train.run_summary``,
``ensemble.ensemble_summary``); ``predict`` never imports them (a Kaggle notebook has neither)."""
