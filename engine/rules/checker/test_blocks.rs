//! Checking in-file `test` blocks: their events (fields, times, amounts) and expectations.

use super::*;

impl Checker<'_> {
    pub(super) fn test(
        &mut self,
        t: &TestDecl,
        plain: &AHashSet<String>,
        sequences: &AHashMap<String, usize>,
    ) -> Option<RuleTest> {
        let Literal::Str(name) = &t.name.value else {
            return None;
        };
        let mut ok = true;
        let mut events = Vec::new();
        let mut at_ms: u64 = 0;
        for (n, e) in t.events.iter().enumerate() {
            let mut ev = PaymentEvent {
                event_id: format!("{name}#{}", n + 1),
                ..Default::default()
            };
            let mut amount: Option<(Decimal, Span)> = None;
            for (key, value) in &e.fields {
                match (key.name.as_str(), value) {
                    ("at", TestValue::Duration(d)) => at_ms = d.ms,
                    ("at", TestValue::Lit(l)) => {
                        self.error(l.span, "`at` needs a duration, e.g. `at: 5s`", None);
                        ok = false;
                    }
                    (
                        "amount",
                        TestValue::Lit(SpannedLiteral {
                            value: Literal::Num(a),
                            span,
                        }),
                    ) => amount = Some((*a, *span)),
                    (
                        k,
                        TestValue::Lit(SpannedLiteral {
                            value: Literal::Str(s),
                            ..
                        }),
                    ) if k.starts_with("attrs.") => {
                        ev.attrs.insert(k["attrs.".len()..].to_string(), s.clone());
                    }
                    (
                        k,
                        TestValue::Lit(SpannedLiteral {
                            value: Literal::Str(s),
                            span,
                        }),
                    ) => match Field::from_name(k) {
                        Some(Field::Type) => ev.kind = s.clone(),
                        Some(Field::EventId) => ev.event_id = s.clone(),
                        Some(Field::EventTime) | Some(Field::Amount) => {
                            self.error(
                                *span,
                                format!("`{k}` needs a number"),
                                Some(if k == "event_time" {
                                    "set event times with `at:`".into()
                                } else {
                                    "write e.g. `amount: 12.50`".into()
                                }),
                            );
                            ok = false;
                        }
                        Some(f) => {
                            if let Some(slot) = str_field_mut(&mut ev, f) {
                                *slot = Some(s.clone());
                            }
                        }
                        None => {
                            self.error(
                                key.span,
                                format!("unknown event field `{k}`"),
                                did_you_mean(k, field_names().chain(["at"])),
                            );
                            ok = false;
                        }
                    },
                    (k, v) => {
                        let span = match v {
                            TestValue::Lit(l) => l.span,
                            TestValue::Duration(d) => d.span,
                        };
                        if Field::from_name(k).is_none() && !k.starts_with("attrs.") {
                            self.error(
                                key.span,
                                format!("unknown event field `{k}`"),
                                did_you_mean(k, field_names().chain(["at"])),
                            );
                        } else {
                            self.error(span, format!("wrong value type for `{k}`"), Some("`amount` takes a number, `at` a duration, other fields a string".into()));
                        }
                        ok = false;
                    }
                }
            }
            ev.event_time_ms = TEST_EPOCH_MS.saturating_add(at_ms as i64);
            if let Some((a, span)) = amount {
                let exp = currency_exponent(ev.currency.as_deref().unwrap_or(""));
                match number::to_minor(a, exp) {
                    _ if a.is_sign_negative() && !a.is_zero() => {
                        self.error(
                            span,
                            format!("amount {} is negative", number::format(a)),
                            Some("the decoder rejects negative amounts".into()),
                        );
                        ok = false;
                    }
                    Some(minor) => ev.amount_minor = Some(minor),
                    None => {
                        self.error(
                            span,
                            format!(
                                "amount {} has more decimals than its currency allows",
                                number::format(a)
                            ),
                            None,
                        );
                        ok = false;
                    }
                }
            }
            events.push(ev);
        }
        if events.is_empty() {
            self.error(
                t.name.span,
                format!("test \"{name}\" has no events"),
                Some("add `event { type: \"authorization\", ... }`".into()),
            );
            ok = false;
        }
        let mut expect: Option<ExpectedDecision> = None;
        let mut timeouts = Vec::new();
        for x in &t.expects {
            let Some(outcome) = Outcome::from_name(&x.outcome.name) else {
                self.error(
                    x.outcome.span,
                    format!("unknown outcome `{}`", x.outcome.name),
                    did_you_mean(&x.outcome.name, outcome_names()),
                );
                ok = false;
                continue;
            };
            let known: Vec<&str> = plain
                .iter()
                .map(String::as_str)
                .chain(sequences.keys().map(String::as_str))
                .collect();
            let mut hits = Vec::new();
            for h in &x.hits {
                if !plain.contains(&h.name) && !sequences.contains_key(&h.name) {
                    self.error(
                        h.span,
                        format!("unknown rule `{}`", h.name),
                        did_you_mean(&h.name, known.iter().copied()),
                    );
                    ok = false;
                }
                hits.push(h.name.clone());
            }
            let decision = ExpectedDecision {
                outcome,
                hits,
                score: x
                    .score
                    .map(|s| s.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
            };
            match &x.timeout_of {
                Some(rule) => match sequences.get(&rule.name) {
                    Some(&sequence) => timeouts.push(ExpectedTimeout {
                        sequence,
                        rule: rule.name.clone(),
                        expect: decision,
                    }),
                    None => {
                        let help = if plain.contains(&rule.name) {
                            Some("only `after … expect …` rules have timeouts".to_string())
                        } else {
                            did_you_mean(&rule.name, sequences.keys().map(String::as_str))
                        };
                        self.error(
                            rule.span,
                            format!("`{}` is not a sequence rule", rule.name),
                            help,
                        );
                        ok = false;
                    }
                },
                None if expect.is_some() => {
                    self.error(
                        x.span,
                        format!("test \"{name}\" has more than one `expect` for its last event"),
                        None,
                    );
                    ok = false;
                }
                None => expect = Some(decision),
            }
        }
        let Some(expect) = expect else {
            self.error(
                t.name.span,
                format!("test \"{name}\" has no `expect <outcome>` line"),
                Some("add e.g. `expect review hits card_velocity`".into()),
            );
            return None;
        };
        ok.then(|| RuleTest {
            name: name.clone(),
            events,
            expect,
            timeouts,
            file: self
                .sources
                .get(t.span.file as usize)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            line: self.line_of(t.span),
            span: t.span,
        })
    }
}

fn str_field_mut(ev: &mut PaymentEvent, f: Field) -> Option<&mut Option<String>> {
    Some(match f {
        Field::TxnId => &mut ev.txn_id,
        Field::UserId => &mut ev.user_id,
        Field::CardId => &mut ev.card_id,
        Field::DeviceId => &mut ev.device_id,
        Field::Ip => &mut ev.ip,
        Field::MerchantId => &mut ev.merchant_id,
        Field::Currency => &mut ev.currency,
        Field::Country => &mut ev.country,
        Field::IpCountry => &mut ev.ip_country,
        Field::CardCountry => &mut ev.card_country,
        Field::Mcc => &mut ev.mcc,
        Field::Channel => &mut ev.channel,
        Field::EventId | Field::Type | Field::EventTime | Field::Amount => return None,
    })
}
