#!/usr/bin/env python3
"""The shipped fraud model reads what it was trained on.

The model is trained on rows `riskflowd --replay` computes from tools/train/fraud_features.conf;
riskflowd serves it with deploy/features.conf. This holds, for every input the model's manifest
names: its declaration is the same line in both files (whitespace aside), and so is every
declaration it depends on — a derived feature's arguments, and the entities (`entity` lines)
of each feature's `per KIND` and `delta(x,KIND)`. Also: the model the daemon loads by default
and the one deploy/riskflowd.conf names are that manifest.

usage: served_features_match_training.py   (from the repository root; standard library only)
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVED = os.path.join(ROOT, "deploy", "features.conf")
TRAINED = os.path.join(ROOT, "tools", "train", "fraud_features.conf")
MANIFEST = os.path.join(ROOT, "deploy", "models", "fraud_xgb.manifest.json")


def declarations(path):
    """name -> normalised line, for `entity`, `feature` and `derived` lines."""
    decl = {}
    with open(path) as f:
        for raw in f:
            line = " ".join(raw.split("#", 1)[0].split())
            if not line:
                continue
            m = re.match(r"(entity) (\w+) |(feature|derived) (\w+) =", line)
            if not m:
                sys.exit("%s: cannot read %r" % (path, line))
            name = ("entity:" + m.group(2)) if m.group(1) else m.group(4)
            if name in decl:
                sys.exit("%s: %s declared twice" % (path, name))
            decl[name] = line
    return decl


def depends(name, line, decl):
    """The declarations one line needs besides itself."""
    if line.startswith("entity "):
        return []
    body = line.split("=", 1)[1]
    out = ["entity:" + k for k in re.findall(r"\bper (\w+)", body)]
    out += ["entity:" + k for k in re.findall(r"delta\(\w+,(\w+)\)", body)]
    if line.startswith("derived "):
        args = re.match(r"\s*\w+\(([^)]*)\)", body).group(1)
        out += [a.strip() for a in args.split(",") if a.strip() in decl]
    return out


def main():
    served, trained = declarations(SERVED), declarations(TRAINED)
    with open(MANIFEST) as f:
        features = json.load(f)["features"]
    assert len(features) == 19, features
    todo, seen, bad = list(features), set(), []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in trained:
            bad.append("%s: not in %s" % (name, TRAINED))
            continue
        if served.get(name) != trained[name]:
            bad.append("%s:\n  served:  %s\n  trained: %s" % (name, served.get(name), trained[name]))
        todo += depends(name, trained[name], trained)
    assert "entity:terminal" in seen and "entity:payment" in seen, seen
    # The daemon's default model and the production configuration's.
    with open(os.path.join(ROOT, "src", "job_fraud.c")) as f:
        default = re.search(r'RF_PROP_S\("fraud.model.path", *\w+, *\w+, *"([^"]+)"', f.read())
    if not default or default.group(1) != "deploy/models/fraud_xgb.manifest.json":
        bad.append("job_fraud.c: the default fraud.model.path is %s"
                   % (default and default.group(1)))
    with open(os.path.join(ROOT, "deploy", "riskflowd.conf")) as f:
        conf = re.search(r"^fraud\.model\.path=(.*)$", f.read(), re.M)
    if not conf or os.path.basename(conf.group(1)) != "fraud_xgb.manifest.json":
        bad.append("deploy/riskflowd.conf: fraud.model.path is %s" % (conf and conf.group(1)))
    if bad:
        sys.exit("served and trained features differ:\n" + "\n".join(bad))
    print("ok: %d declarations the model reads are the same in both files" % len(seen))


if __name__ == "__main__":
    main()
