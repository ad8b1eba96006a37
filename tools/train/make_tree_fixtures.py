#!/usr/bin/env python3
"""make_tree_fixtures.py — the committed fixtures of riskflowd's tree evaluator (src/trees.c).

Trains small XGBoost and LightGBM models on synthetic rows that exercise what the evaluator
must get right (NaN in some features, exact zeros, ties with thresholds, heavy tails), and
writes, under tests/fixtures/:

    trees_xgb.json        XGBoost binary:logistic, depth 6 (the branch-free evaluator)
    trees_lgb.txt         LightGBM binary, leaf-wise and deep (the node walk as well)
    trees_lgb_zero.txt    LightGBM with zero_as_missing (missing type Zero)
    trees_x.npy           10 000 rows x 12 features (float64)
    trees_xgb_pred.npy    Booster.predict(DMatrix(x))                    (float32 -> float64)
    trees_xgb_margin.npy  the same with output_margin=True
    trees_xgb_shap.npy    pred_contribs=True on the first 1 000 rows (12 + 1 columns)
    trees_xgb_saabas.npy  pred_contribs=True, approx_contribs=True (path attribution), same rows
    trees_lgb_pred.npy, trees_lgb_raw.npy, trees_lgb_shap.npy, trees_lgb_zero_pred.npy

tests/unit/test_trees.c checks riskflowd against them. Training venv (tools/train/setup.sh):

    .venv-train/bin/python tools/train/make_tree_fixtures.py
"""
import os

import lightgbm as lgb
import numpy as np
import xgboost as xgb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures")
NAMES = ["amount", "log_amount", "cust_count_1d", "cust_mean_7d", "cust_ratio_30d",
         "term_risk_7d", "term_count_7d", "secs_since_last", "is_ecom", "is_night",
         "card_count_1d", "noise"]


def rows(rng, n):
    x = np.empty((n, len(NAMES)))
    amt = np.round(rng.lognormal(3.5, 1.2, n), 2)
    x[:, 0] = amt
    x[:, 1] = np.log1p(amt)
    x[:, 2] = rng.poisson(2.0, n)                       # exact zeros and small integers
    x[:, 3] = np.round(rng.lognormal(3.5, 0.8, n), 2)
    x[:, 4] = x[:, 0] / np.maximum(x[:, 3], 1)
    x[:, 5] = np.where(rng.random(n) < 0.9, 0.0, rng.beta(1, 3, n))
    x[:, 6] = rng.poisson(30, n)
    x[:, 7] = np.round(rng.exponential(20000, n))
    x[:, 8] = rng.random(n) < 0.3
    x[:, 9] = rng.random(n) < 0.2
    x[:, 10] = rng.poisson(1.0, n)
    x[:, 11] = rng.normal(0, 1, n)
    # Missing values where a feature can be unknown (a new customer, an unseen terminal).
    for j in (3, 4, 5, 7):
        x[rng.random(n) < 0.08, j] = np.nan
    logit = (-4 + 0.004 * np.nan_to_num(x[:, 0]) + 6 * np.nan_to_num(x[:, 5])
             + 0.4 * np.nan_to_num(x[:, 4]) + 0.8 * x[:, 8] - 0.00002 * np.nan_to_num(x[:, 7], nan=5e4)
             + 0.3 * x[:, 10] + 0.5 * np.isnan(x[:, 5]))
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return x, y.astype(int)


def save(name, a):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(a, dtype=np.float64))


def main():
    rng = np.random.default_rng(20261202)
    x_train, y_train = rows(rng, 40000)
    x, _ = rows(rng, 10000)
    # Rows sitting exactly on thresholds are the ones an off-by-one comparison gets wrong:
    # after training, copy some thresholds into the test rows.
    dtrain = xgb.DMatrix(x_train, label=y_train, feature_names=NAMES)
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.15,
                     "subsample": 0.8, "seed": 7}, dtrain, num_boost_round=40)
    lgbm = lgb.train({"objective": "binary", "num_leaves": 40, "max_depth": -1,
                      "min_data_in_leaf": 5, "learning_rate": 0.1, "verbose": -1, "seed": 7},
                     lgb.Dataset(x_train, y_train, feature_name=NAMES), num_boost_round=40)
    lgbz = lgb.train({"objective": "binary", "num_leaves": 15, "zero_as_missing": True,
                      "learning_rate": 0.1, "verbose": -1, "seed": 7},
                     lgb.Dataset(x_train, y_train, feature_name=NAMES), num_boost_round=15)
    dump = lgbm.dump_model()
    thr = []
    for t in dump["tree_info"][:10]:
        stack = [t["tree_structure"]]
        while stack:
            nd = stack.pop()
            if "split_feature" in nd:
                thr.append((nd["split_feature"], nd["threshold"]))
                stack += [nd["left_child"], nd["right_child"]]
    for i, (f, v) in enumerate(thr[:500]):
        x[i, f] = v
    for tree in bst.get_dump(dump_format="json")[:5]:
        import json
        stack = [json.loads(tree)]
        k = 500
        while stack and k < 1000:
            nd = stack.pop()
            if "split" in nd:
                x[k, NAMES.index(nd["split"])] = np.float32(nd["split_condition"])
                k += 1
                stack += nd["children"]

    bst.save_model(os.path.join(OUT, "trees_xgb.json"))
    lgbm.save_model(os.path.join(OUT, "trees_lgb.txt"))
    lgbz.save_model(os.path.join(OUT, "trees_lgb_zero.txt"))
    save("trees_x.npy", x)
    dx = xgb.DMatrix(x, feature_names=NAMES)
    save("trees_xgb_pred.npy", bst.predict(dx))
    save("trees_xgb_margin.npy", bst.predict(dx, output_margin=True))
    save("trees_xgb_shap.npy", bst.predict(xgb.DMatrix(x[:1000], feature_names=NAMES),
                                           pred_contribs=True))
    save("trees_xgb_saabas.npy", bst.predict(xgb.DMatrix(x[:1000], feature_names=NAMES),
                                             pred_contribs=True, approx_contribs=True))
    save("trees_lgb_pred.npy", lgbm.predict(x))
    save("trees_lgb_raw.npy", lgbm.predict(x, raw_score=True))
    save("trees_lgb_shap.npy", lgbm.predict(x[:1000], pred_contrib=True))
    save("trees_lgb_zero_pred.npy", lgbz.predict(x))
    print("xgboost %s, lightgbm %s: fixtures in %s" % (xgb.__version__, lgb.__version__, OUT))


if __name__ == "__main__":
    main()
