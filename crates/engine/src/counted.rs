//! A `std::sync::mpsc` channel with a count of the messages sent and not yet taken, for a
//! receiver that looks for messages on every step of a hot loop: with nothing counted in, a
//! look is one atomic load instead of the channel's `try_recv` (~60 instructions). Used for
//! the pipeline's control messages (sink and subscription registrations, read by egress) and
//! for a novated connection's reader-to-writer messages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

pub struct CountedTx<T> {
    tx: mpsc::Sender<T>,
    pending: Arc<AtomicUsize>,
}

pub struct CountedRx<T> {
    rx: mpsc::Receiver<T>,
    pending: Arc<AtomicUsize>,
}

pub fn channel<T>() -> (CountedTx<T>, CountedRx<T>) {
    let (tx, rx) = mpsc::channel();
    let pending = Arc::new(AtomicUsize::new(0));
    (CountedTx { tx, pending: pending.clone() }, CountedRx { rx, pending })
}

impl<T> CountedTx<T> {
    /// Messages sent and not yet taken (Relaxed: a bound for back-pressure, not a handshake).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn send(&self, m: T) -> Result<(), mpsc::SendError<T>> {
        self.tx.send(m)?;
        // Release: a receiver that sees the count finds the message in the channel.
        self.pending.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

impl<T> CountedRx<T> {
    /// The next message, without looking into the channel when none was counted in.
    pub fn try_take(&self) -> Option<T> {
        // Acquire: pairs with `send`'s increment, made after the message was in the channel.
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.take_now()
    }

    /// The next message in the channel, even one whose count is not in yet (for a receiver
    /// that knows, by other means, that a message was sent: its count may still be in flight).
    pub fn take_now(&self) -> Option<T> {
        let m = self.rx.try_recv().ok()?;
        // Wrapping: a message taken before its sender's increment lands takes the count below
        // zero for that moment; the increment brings it back.
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_in_order_and_the_count_gates_only_the_cheap_look() {
        let (tx, rx) = channel::<u32>();
        assert_eq!(rx.try_take(), None);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(rx.try_take(), Some(1));
        assert_eq!(rx.try_take(), Some(2));
        assert_eq!(rx.try_take(), None);
        // A message whose count has not landed yet: `try_take` does not see it, `take_now`
        // does, and the late increment leaves the count at zero again.
        tx.tx.send(3).unwrap();
        assert_eq!(rx.try_take(), None);
        assert_eq!(rx.take_now(), Some(3));
        tx.pending.fetch_add(1, Ordering::Release);
        assert_eq!(tx.pending.load(Ordering::Relaxed), 0);
        assert_eq!(rx.try_take(), None);
        // Sent from another thread: seen once the sender is done.
        std::thread::spawn(move || tx.send(4).unwrap()).join().unwrap();
        assert_eq!(rx.try_take(), Some(4));
    }
}
