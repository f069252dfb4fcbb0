import { it } from 'vitest';
import { clusterSection } from './cluster.js';
it('cluster', async () => {
  const v: string[] = [];
  const md = await clusterSection((t, value, limit, why) => v.push(`${t}: ${value.toFixed(2)} (${limit}) ${why}`));
  console.log([...md, ...v].join('\n'));
});
