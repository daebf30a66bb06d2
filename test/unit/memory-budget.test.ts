/** protocol/memory-budget.ts: the buffer budget shared by all connections, its reserve and wake-ups. */
import t from 'tap';
import { MemoryBudget, type BudgetMember } from '../../protocol/memory-budget';

const MiB = 1024 * 1024;

class Member implements BudgetMember {
  woken = 0;
  constructor(
    private readonly budget: MemoryBudget,
    private readonly onWake?: () => void,
  ) {}
  budgetFreed(): void {
    this.woken++;
    this.onWake?.();
  }
  mayRead(): boolean {
    return this.budget.mayRead(this);
  }
}

t.test('charges add up; at the limit only connections under their reserve may read', async (t) => {
  const b = new MemoryBudget(10 * MiB, MiB);
  const hog = new Member(b);
  const other = new Member(b);
  b.set(hog, 6 * MiB);
  t.ok(hog.mayRead(), 'below the limit: yes');
  b.set(other, 4 * MiB);
  t.equal(b.usedBytes, 10 * MiB);
  t.notOk(hog.mayRead(), 'at the limit, holding more than the reserve: no');
  t.notOk(other.mayRead(), 'the other one too');
  const fresh = new Member(b);
  t.ok(fresh.mayRead(), 'a connection holding nothing may read its next request (reserve)');
  b.set(fresh, MiB / 2);
  t.ok(fresh.mayRead(), 'still under its reserve');
  b.set(fresh, 2 * MiB);
  t.notOk(fresh.mayRead(), 'past its reserve: waits like the others');
  t.equal(b.usedBytes, 12 * MiB, 'the overdraft is what the reserve let through');
});

t.test('waiting connections are woken, oldest first, when the total drops below the limit', async (t) => {
  const b = new MemoryBudget(10 * MiB, MiB);
  const order: string[] = [];
  const a = new Member(b, () => order.push('a'));
  const c = new Member(b, () => order.push('c'));
  const d = new Member(b, () => order.push('d'));
  b.set(a, 4 * MiB);
  b.set(c, 4 * MiB);
  b.set(d, 2 * MiB);
  t.notOk(c.mayRead());
  t.notOk(a.mayRead());
  b.set(d, 3 * MiB); // growing wakes nobody
  t.same(order, []);
  b.set(d, 0);
  t.same(order, ['c', 'a'], 'woken in the order they started waiting');
  t.notOk(d.woken, 'a connection that was not waiting is not woken');
  order.length = 0;
  b.set(a, 5 * MiB);
  b.set(c, 5 * MiB);
  t.notOk(a.mayRead());
  b.remove(a);
  t.same(order, [], 'a removed connection is not woken');
  t.equal(b.usedBytes, 5 * MiB, 'and its charge is released');
});

t.test('a woken connection that takes the budget again stops the wake-up round', async (t) => {
  const b = new MemoryBudget(10 * MiB, MiB);
  const first: Member = new Member(b, () => b.set(first, 8 * MiB));
  const second = new Member(b);
  const holder = new Member(b);
  b.set(first, 2 * MiB);
  b.set(second, 2 * MiB);
  b.set(holder, 6 * MiB);
  t.notOk(first.mayRead());
  t.notOk(second.mayRead());
  b.set(holder, 0); // 4 MiB used: wake first, which takes 6 more → 10 MiB
  t.equal(first.woken, 1);
  t.equal(second.woken, 0, 'the budget was full again before its turn');
  t.notOk(second.mayRead(), 'it still waits');
});
