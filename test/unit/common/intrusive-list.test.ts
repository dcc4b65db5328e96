import t from 'tap';
import { IntrusiveList, type ListNode } from '../../../src/common/intrusive-list';

class Item implements ListNode<Item> {
  listPrev: Item | undefined = undefined;
  listNext: Item | undefined = undefined;
  constructor(readonly id: number) {}
}

function ids(l: IntrusiveList<Item>): number[] {
  const out: number[] = [];
  l.forEach((n) => out.push(n.id));
  return out;
}

t.test('members are visited newest first; head, middle and tail leave cleanly', (t) => {
  const l = new IntrusiveList<Item>();
  const items = [0, 1, 2, 3, 4, 5].map((i) => new Item(i));
  for (const i of items) l.add(i);
  t.same(ids(l), [5, 4, 3, 2, 1, 0]);
  t.equal(l.remove(items[3]), true, 'middle');
  t.equal(l.remove(items[5]), true, 'head');
  t.equal(l.remove(items[0]), true, 'tail');
  t.same(ids(l), [4, 2, 1]);
  t.equal(l.size, 3);
  // the removed ones hold no links (a dead member must not keep a newer one alive)
  for (const i of [items[0], items[3], items[5]]) t.same([i.listPrev, i.listNext], [undefined, undefined]);
  // the new head's back link was cleared when the old head left: removing it keeps the rest
  t.equal(l.remove(items[4]), true);
  t.same(ids(l), [2, 1]);
  t.equal(l.remove(items[2]), true);
  t.same(ids(l), [1]);
  t.equal(l.remove(items[1]), true);
  t.same(ids(l), []);
  t.equal(l.size, 0);
  t.end();
});

t.test('removing a non-member changes nothing', (t) => {
  const l = new IntrusiveList<Item>();
  const a = new Item(1);
  const b = new Item(2);
  l.add(a);
  t.equal(l.remove(b), false);
  t.equal(l.remove(a), true);
  t.equal(l.remove(a), false, 'twice');
  t.same(ids(l), []);
  t.equal(l.size, 0);
  t.end();
});

t.test('forEach survives the visited member removing itself, and re-adding works', (t) => {
  const l = new IntrusiveList<Item>();
  const items = [0, 1, 2, 3].map((i) => new Item(i));
  for (const i of items) l.add(i);
  const seen: number[] = [];
  l.forEach((n) => {
    seen.push(n.id);
    if (n.id % 2 === 1) l.remove(n);
  });
  t.same(seen, [3, 2, 1, 0]);
  t.same(ids(l), [2, 0]);
  l.add(items[3]);
  t.same(ids(l), [3, 2, 0]);
  t.end();
});
