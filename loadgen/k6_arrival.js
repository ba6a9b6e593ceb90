// k6's open model for the generators' comparison (harness/infra/generators.py): RATE
// iterations a second for DURATION, each one GET of URL, VUS virtual users pre-allocated.
import http from 'k6/http';

export const options = {
  discardResponseBodies: true,
  scenarios: {
    open: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE),
      timeUnit: '1s',
      duration: __ENV.DURATION,
      preAllocatedVUs: Number(__ENV.VUS),
      maxVUs: Number(__ENV.VUS),
      gracefulStop: '5s',
    },
  },
};

export default function () {
  http.get(__ENV.URL, { timeout: '5s' });
}

export function handleSummary(data) {
  const count = (name) => (data.metrics[name] ? data.metrics[name].values.count : 0);
  const failed = data.metrics.http_req_failed ? data.metrics.http_req_failed.values.passes : 0;
  const out = { answered: count('http_reqs') - failed, dropped: count('dropped_iterations') };
  return { stdout: JSON.stringify(out) + '\n' };
}
