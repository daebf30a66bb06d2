/** protocol/memory-budget.ts: the buffer budget shared by all connections, its reserve, its overdraft and wake-ups. */
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
  t.notOk(second.mayRead(), 'the budget was full again before its turn: it still waits');
});

t.test('past the limit a request needs the reserve or an overdraft grant; the overdraft is shared and bounded', async (t) => {
  const b = new MemoryBudget(10 * MiB, MiB, 64 * MiB);
  const hog = new Member(b);
  b.set(hog, 10 * MiB);
  const small = new Member(b);
  t.ok(b.admit(small, MiB / 2), 'a request that fits the reserve needs no grant');
  t.notOk(b.hasGrant(small));
  const members = Array.from({ length: 3 }, () => new Member(b));
  t.ok(b.admit(members[0], 32 * MiB), 'a 32 MiB request of a connection under its reserve: granted');
  t.ok(b.admit(members[1], 32 * MiB), 'a second one: granted');
  t.equal(b.grantedBytes, 64 * MiB);
  t.notOk(b.admit(members[2], MiB * 2), 'the overdraft is used up: a third waits, however many connections there are');
  t.notOk(b.admit(members[0], MiB * 2), 'one grant per connection');
  b.releaseGrant(members[0]);
  t.equal(members[2].woken, 1, 'a released grant wakes the waiters');
  t.ok(b.admit(members[2], MiB * 2), 'and its room goes to the next');
  const busy = new Member(b);
  b.set(busy, 2 * MiB);
  b.releaseGrant(members[1]);
  t.notOk(b.admit(busy, 4 * MiB), 'a connection over its reserve gets no grant');
  t.ok(b.admit(busy, 4 * MiB, true), 'unless all it holds is input waiting for this request (idle)');
  t.ok(b.admit(hog, 0), 'a request adding nothing (its payload is in) is always admitted');
});

t.test('a request larger than the budget goes through the overdraft', async (t) => {
  const b = new MemoryBudget(MiB, 256 * 1024, 64 * MiB);
  const m = new Member(b);
  t.ok(b.admit(m, 32 * MiB), 'under the limit: admitted');
  b.set(m, 2 * MiB); // its payload arrives
  t.ok(b.mayRead(m, 30 * MiB), 'past the limit with the payload half in: a finishing grant lets it complete');
  t.ok(b.hasGrant(m));
});

t.test('finishing grants use at most half of the overdraft', async (t) => {
  const b = new MemoryBudget(10 * MiB, MiB, 64 * MiB);
  const stalled = Array.from({ length: 3 }, () => new Member(b));
  for (const s of stalled) b.set(s, 4 * MiB);
  t.notOk(stalled[0].mayRead(), 'at a request boundary, over its reserve: waits');
  t.ok(b.mayRead(stalled[0], 30 * MiB), 'a half-received 32 MiB WRITE gets a finishing grant');
  t.notOk(b.mayRead(stalled[1], 30 * MiB), 'the next one waits: finishing grants may use only half of the overdraft');
  const fresh = new Member(b);
  t.ok(b.admit(fresh, 32 * MiB), 'the other half still serves the next request of a connection that behaves');
  t.notOk(b.mayRead(stalled[0], 0), 'a grant does not let its holder read past the limit for anything else');
});
