import t from 'tap';
import { coarseClockTicking, coarseNow } from '../../../src/common/clock';
import { waitUntil } from '../../helpers/wait';

t.test('the coarse clock is at most ~100 ms stale while read, and stops ticking when unread', async (t) => {
  const before = Date.now();
  const first = coarseNow();
  t.ok(first >= before && first <= Date.now(), 'a first read is fresh');
  t.equal(coarseClockTicking(), true, 'reading starts the ticker');
  // While it is read, it follows the wall clock (checked, not slept: read until it moves).
  await waitUntil(() => coarseNow() > first, 'the coarse clock to move');
  const now = coarseNow();
  t.ok(Date.now() - now <= 150, `read while ticking: ${Date.now() - now} ms stale`);
  // Unread, the ticker stops by itself.
  await waitUntil(() => !coarseClockTicking(), 'the unread clock to stop ticking', 3000);
  t.equal(coarseClockTicking(), false, 'idle: no ticker');
  const t0 = Date.now();
  const again = coarseNow();
  t.ok(again >= t0, 'the first read after idling is fresh, not the value from before');
  t.equal(coarseClockTicking(), true, 'and ticks again');
});
