/**
 * A FIFO of ring buffers, after undici's lib/dispatcher/fixed-queue.js: `push` and `shift` are O(1)
 * and allocate only when a whole buffer of SEGMENT_SIZE slots fills up, so a burst of waiters does not
 * reallocate or copy an array the way `Array#shift` can.
 *
 * Invariants: `head` is the segment items are shifted from, `tail` the one items are pushed to; a
 * segment is full when `(top + 1) % SEGMENT_SIZE === bottom` (one slot always stays empty so full and
 * empty differ); a shifted slot is cleared so the queue never keeps a dead item reachable.
 * The queue itself is unbounded: the caller (the function pool) enforces `maxQueue` on live items.
 */

/** Slots per ring buffer segment. A power of two so the index wraps with a mask. */
const SEGMENT_SIZE = 2048;
const MASK = SEGMENT_SIZE - 1;

class Segment<T> {
  readonly list: (T | undefined)[] = new Array(SEGMENT_SIZE);
  bottom = 0;
  top = 0;
  next: Segment<T> | null = null;

  isEmpty(): boolean {
    return this.top === this.bottom;
  }

  isFull(): boolean {
    return ((this.top + 1) & MASK) === this.bottom;
  }

  push(item: T): void {
    this.list[this.top] = item;
    this.top = (this.top + 1) & MASK;
  }

  shift(): T | undefined {
    const item = this.list[this.bottom];
    if (item === undefined) return undefined;
    this.list[this.bottom] = undefined;
    this.bottom = (this.bottom + 1) & MASK;
    return item;
  }
}

/** An unbounded FIFO queue (see the file comment). `undefined` cannot be stored. */
export class FixedQueue<T> {
  private head: Segment<T>;
  private tail: Segment<T>;
  private count = 0;

  constructor() {
    this.head = this.tail = new Segment<T>();
  }

  /** Number of items held. */
  get length(): number {
    return this.count;
  }

  isEmpty(): boolean {
    return this.count === 0;
  }

  /** Appends at the tail. */
  push(item: T): void {
    if (this.tail.isFull()) {
      this.tail = this.tail.next = new Segment<T>();
    }
    this.tail.push(item);
    this.count++;
  }

  /** Removes and returns the head, or `undefined` when empty. */
  shift(): T | undefined {
    const segment = this.head;
    const item = segment.shift();
    if (item === undefined) return undefined;
    this.count--;
    if (segment.isEmpty() && segment.next !== null) this.head = segment.next;
    return item;
  }

  /** The head without removing it, or `undefined` when empty. */
  peek(): T | undefined {
    return this.head.list[this.head.bottom];
  }
}
