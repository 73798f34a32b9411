import json, statistics as st, sys
def j(xs, f): return ', '.join(f.format(x) for x in xs)
for fn in sys.argv[1:]:
    rows=[json.loads(l) for l in open(fn)]
    print('##', fn)
    lim=[r for r in rows if r['build']=='limit']
    print('limit', j([r['ok_per_s'] for r in lim], '{:,.0f}'), 'p50', j([r['p50'] for r in lim], '{}'))
    builds=list(dict.fromkeys(r['build'] for r in rows if r['build']!='limit'))
    conns=sorted({r['conns'] for r in rows if r['build']!='limit'})
    print('| build | clients | purchases/s (rounds 1, 2, 3) | p50 ms | p99 ms | non-2xx | x limit (same round) |')
    print('|---|---|---|---|---|---|---|')
    for b in builds:
        for c in conns:
            rs=[r for r in rows if r['build']==b and r['conns']==c]
            ratio=[r['ok_per_s']/lim[r['round']]['ok_per_s'] for r in rs]
            print('| %s | %d | %s | %s | %s | %s | %s |' % (b, c, j([r['ok_per_s'] for r in rs], '{:,.0f}'), j([r['p50'] for r in rs], '{:.1f}'), j([r['p99'] for r in rs], '{:.0f}'), j([r['bad'] for r in rs], '{}'), j(ratio, '{:.3f}')))
    print()
    keys=['frontend','order-1','order-2','catalog-1','catalog-2','memcached']
    print('| build | clients | ' + ' | '.join(keys) + ' | total |')
    print('|---|---|' + '---|'*7)
    for c in [c for c in conns if c > 1]:
        for b in builds:
            rs=[r for r in rows if r['build']==b and r['conns']==c]
            m={k: st.mean(r['cpu_s_per_1000'][k] for r in rs) for k in keys}
            print('| %s | %d | %s | %.3f |' % (b, c, ' | '.join('%.3f' % m[k] for k in keys), sum(m.values())))
    print()
