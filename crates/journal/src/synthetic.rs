//! A deterministic workload for crash tests and benchmarks: the command at each sequence number
//! is a pure function of `(seed, seq)`, so a test can rebuild exactly what a killed process
//! journaled without talking to it.

use novate_core::*;

/// Instruments of the workload.
pub const INSTRUMENTS: u32 = 20;
/// Accounts of the workload.
pub const ACCOUNTS: u64 = 200;
/// Records 1..=SETUP_RECORDS create instruments, accounts and collateral.
pub const SETUP_RECORDS: Seq = INSTRUMENTS as Seq + 2 * ACCOUNTS;

/// Capacities sized for the workload (trades beyond `trades_max` are rejected, deterministically).
pub fn limits() -> Limits {
    Limits { accounts_max: 256, instruments_max: 32, positions_max: 8_192, trades_max: 1_000_000 }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The command at `seq` (>= 1) of workload `seed`.
pub fn command(seed: u64, seq: Seq) -> Command {
    assert!(seq >= 1, "sequence numbers start at 1");
    let ins = INSTRUMENTS as Seq;
    if seq <= ins {
        let id = seq as InstrumentId;
        return Command::UpsertInstrument(InstrumentSpec {
            id,
            multiplier: [1, 10, 50, 100][seq as usize % 4],
            margin_bps: 500 + 100 * i64::from(id % 5),
            settle_days: 2,
        });
    }
    if seq <= ins + ACCOUNTS {
        let id = seq - ins;
        return Command::UpsertAccount(AccountSpec {
            id,
            max_position: if id.is_multiple_of(7) { 5_000 } else { 0 },
            max_notional: 0,
            max_loss: if id.is_multiple_of(11) { 1_000_000 * i128::from(PRICE_SCALE) } else { 0 },
            suspended: false,
        });
    }
    if seq <= SETUP_RECORDS {
        let account = seq - ins - ACCOUNTS;
        return Command::AdjustCollateral { account, amount: 10_000_000 * i128::from(PRICE_SCALE) };
    }
    let r = mix(seed ^ seq.wrapping_mul(0xd6e8_feb8_6659_fd93));
    let pick = |shift: u32, n: u64| {
        (((r.rotate_right(shift) & 0xffff_ffff) as u128 * u128::from(n)) >> 32) as u64
    };
    let account = 1 + pick(0, ACCOUNTS);
    let instrument = 1 + pick(8, u64::from(INSTRUMENTS)) as InstrumentId;
    let price = (90 + pick(16, 20) as i64) * PRICE_SCALE + pick(24, 100) as i64 * 1_000_000;
    match r % 100 {
        0..=79 => {
            let sell = 1 + (account + pick(32, ACCOUNTS - 1)) % ACCOUNTS;
            Command::ClearTrade(Trade {
                trade_id: seq,
                buy: account,
                sell,
                instrument,
                qty: 1 + pick(40, 100) as i64,
                price,
                trade_date: 20260105,
            })
        }
        80..=84 => Command::MarkPrice { instrument, price },
        85..=87 => Command::SettlementPrice { instrument, price },
        88..=92 => Command::CheckOrder {
            account,
            instrument,
            side: if r & (1 << 50) == 0 { Side::Buy } else { Side::Sell },
            qty: 1 + pick(40, 500) as i64,
            price,
        },
        93..=95 => {
            Command::BustTrade { trade_id: SETUP_RECORDS + 1 + pick(32, seq - SETUP_RECORDS) }
        }
        _ => Command::AdjustCollateral {
            account,
            amount: (pick(32, 2_000) as i128 - 1_000) * i128::from(PRICE_SCALE),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_mostly_accepted() {
        let mut sm = StateMachine::new(limits()).unwrap();
        let mut rejected = 0;
        for seq in 1..=20_000 {
            assert_eq!(command(7, seq), command(7, seq));
            if sm.apply(&command(7, seq), seq, 0).is_err() {
                rejected += 1;
            }
        }
        assert!(rejected < 4_000, "{rejected} of 20000 rejected: the workload should mostly clear");
        assert_ne!(command(7, 5_000), command(8, 5_000));
    }
}
