"""The Esteva et al. study: grouped k-fold over a taxonomy, the 3-/9-way/partition ablation, the binary tasks with
readers, operating points, calibration, t-SNE and saliency, and its HTML report.

- ``run``        folds, frozen features or fine-tuning per fold, the saved predictions (``run_study``)
- ``analysis``   every figure of the report from the saved predictions (``analyse_study``)
- ``report``     the study's HTML page
- ``summary``    a finished study's headline figures and saved settings, read back from its folder
- ``evaluate``   a saved model against labelled data: its figures, and a referral threshold chosen afresh on it
"""
