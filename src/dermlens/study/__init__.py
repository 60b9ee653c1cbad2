"""The Esteva et al. study: grouped k-fold over a taxonomy, the 3-/9-way/partition ablation, the binary tasks with
readers, operating points, calibration, t-SNE and saliency, and its HTML report; and evaluating a saved model.

- ``design``     the study's settings, label spaces, grouped folds and the files its predictions are saved in
- ``probe``      the fast mode: frozen backbone features (cached) and a linear probe per fold and space
- ``run``        ``run_study``: folds, fast or full mode, the saved predictions, t-SNE, saliency cases
- ``analysis``   every figure of the report from the saved predictions (``analyse_study``)
- ``report``     the study's HTML page (``dermlens report`` rebuilds it)
- ``summary``    what ``dermlens study`` prints
- ``evaluate``   one saved model on a labelled dataset (``dermlens evaluate``), a site's own operating point
"""
