#!/usr/bin/env python3
"""Writes tests/models/: the current botocore service models, reduced to the operations amid
implements (tools/model-ops.txt), with their paginators and waiters.

Debian 12's boto3 (1.26) and AWS CLI (2.9) predate operations and parameters amid serves
(DescribeImages paging, DisableImage, deregistration protection, ...).  The integration tests
point them at these files with AWS_DATA_PATH, so they drive amid the way current SDKs do.
Run with a python3 whose botocore is current; the output is committed.
"""
import gzip
import json
import os

import botocore

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(os.path.dirname(botocore.__file__), 'data')
VERSIONS = {'ec2': '2016-11-15', 'sts': '2011-06-15', 'kms': '2014-11-01',
            'ebs': '2019-11-02', 'dlm': '2018-01-12'}


def load(svc, name):
    base = os.path.join(DATA, svc, VERSIONS[svc], name + '.json')
    if os.path.exists(base + '.gz'):
        with gzip.open(base + '.gz') as f:
            return json.load(f)
    if os.path.exists(base):
        with open(base) as f:
            return json.load(f)
    return None


def strip_docs(o):
    if isinstance(o, dict):
        return {k: strip_docs(v) for k, v in o.items() if k not in ('documentation',)}
    if isinstance(o, list):
        return [strip_docs(v) for v in o]
    return o


def reduce(svc, ops):
    m = load(svc, 'service-2')
    keep = {}

    def visit(name):
        if name in keep:
            return
        s = m['shapes'][name]
        keep[name] = s
        for mem in s.get('members', {}).values():
            visit(mem['shape'])
        for k in ('member', 'key', 'value'):
            if k in s:
                visit(s[k]['shape'])

    for op in ops:
        o = m['operations'][op]
        for k in ('input', 'output'):
            if k in o:
                visit(o[k]['shape'])
        for e in o.get('errors', []):
            visit(e['shape'])
    out = {'version': m.get('version', '2.0'), 'metadata': m['metadata'],
           'operations': {op: m['operations'][op] for op in ops},
           'shapes': keep}
    return strip_docs(out)


def main():
    wanted = {}
    with open(os.path.join(HERE, 'model-ops.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                svc, op = line.split()
                wanted.setdefault(svc, []).append(op)
    for svc, ops in wanted.items():
        d = os.path.join(ROOT, 'tests', 'models', svc, VERSIONS[svc])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, 'service-2.json'), 'w') as f:
            json.dump(reduce(svc, ops), f, separators=(',', ':'), sort_keys=True)
        pag = load(svc, 'paginators-1')
        if pag:
            pag = {'pagination': {k: v for k, v in pag['pagination'].items() if k in ops}}
            with open(os.path.join(d, 'paginators-1.json'), 'w') as f:
                json.dump(pag, f, indent=1, sort_keys=True)
        wai = load(svc, 'waiters-2')
        if wai:
            keepw = {k: v for k, v in wai['waiters'].items() if v['operation'] in ops}
            with open(os.path.join(d, 'waiters-2.json'), 'w') as f:
                json.dump({'version': wai['version'], 'waiters': keepw}, f, indent=1,
                          sort_keys=True)
        print('wrote', d)


if __name__ == '__main__':
    main()
