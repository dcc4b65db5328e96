// A doubly linked list threaded through its members' own fields, for sets of short-lived objects
// on the request path (streams in flight). Adding and removing allocate nothing. A Set would do the
// same job with a hash table that V8 rehashes into a new table every few dozen add/delete pairs;
// the obsolete table stays in old space pointing at the members it held until the next full GC, so
// every member present at a rehash survives young-generation GCs and is promoted with all it
// references. Removing a member clears its links, so a dead member never keeps a newer one alive.

export interface ListNode<T> {
  listPrev: T | undefined;
  listNext: T | undefined;
}

export class IntrusiveList<T extends ListNode<T>> {
  private head: T | undefined = undefined;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Adds `n` at the front; `n` must not be in a list. */
  add(n: T): void {
    const h = this.head;
    n.listPrev = undefined;
    n.listNext = h;
    if (h !== undefined) h.listPrev = n;
    this.head = n;
    this.count++;
  }

  /** Removes `n` if it is in this list; false if it was not. */
  remove(n: T): boolean {
    const prev = n.listPrev;
    const next = n.listNext;
    if (prev !== undefined) prev.listNext = next;
    else if (this.head === n) this.head = next;
    else return false;
    if (next !== undefined) next.listPrev = prev;
    n.listPrev = undefined;
    n.listNext = undefined;
    this.count--;
    return true;
  }

  /** Calls `fn` with each member, newest first; `fn` may remove the member it is given. */
  forEach(fn: (n: T) => void): void {
    for (let n = this.head; n !== undefined; ) {
      const next = n.listNext;
      fn(n);
      n = next;
    }
  }
}
