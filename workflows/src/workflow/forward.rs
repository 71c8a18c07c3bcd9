//! The success path (SPEC §3) as three named steps, each a saga step of the tracker:
//! [`approve`](Saga::approve) (PG approval, payment recorded), [`confirm`](Saga::confirm)
//! (`payment.completed`, stock confirmed) and [`complete`](Saga::complete) (order completed,
//! push, `stock.confirmed`). Steps that do not depend on each other run concurrently.

use super::{
    PG_REJECTION_FINAL_PATCH,
    failure::{Failure, StepError},
    saga::Saga,
};
use crate::{
    activities::{OrderActivities, PaymentActivities, ProductActivities},
    ids,
    types::*,
};
use futures_util::future::{Either, ready};
use temporalio_workflow::{WorkflowCancellationToken, join};

impl Saga {
    /// Runs the three steps; answers whether the customer has been told. Every step runs under
    /// `token`; events run under their own token, so a deadline never cuts an event
    /// publication short.
    pub(super) async fn forward(&self, token: WorkflowCancellationToken) -> Result<bool, Failure> {
        let approval = self.approve(&token).await?;
        let (order, confirmation) = self.confirm(&token, &approval).await?;
        self.complete(&token, order, confirmation).await
    }

    /// 1 + 2. The PG approves and the payment is recorded `COMPLETED` with its approval number
    /// (the lean saga's approval records it itself). The decision is known from here on.
    async fn approve(&self, token: &WorkflowCancellationToken) -> Result<PgApproval, Failure> {
        self.track(saga_steps::PAYMENT_COMPLETION, SagaStatus::Started, None);
        let approval = match self
            .ctx
            .execute_activity(
                PaymentActivities::approve,
                self.payment.clone(),
                self.pg_options(token),
            )
            .await
        {
            Ok(approval) => approval,
            Err(err) => {
                let error = StepError::of(&err);
                return Err(if token.is_cancelled() {
                    self.interruption(token)
                } else if Failure::is_pg_rejection(&error)
                    && self.ctx.patched(PG_REJECTION_FINAL_PATCH)
                {
                    Failure::definite_pg(&error)
                } else {
                    Failure::pg(&error)
                });
            }
        };
        self.ctx.state_mut(|s| {
            s.status.approval_number = Some(approval.approval_number.clone());
            s.decision = Some(PaymentDecision {
                order_id: self.payment.order_id.clone(),
                payment_id: self.payment.payment_id.clone(),
                approved: true,
                approval_number: Some(approval.approval_number.clone()),
                failure_code: None,
                failure_message: None,
                retryable: false,
            });
        });
        if !self.lean {
            self.ctx
                .execute_activity(
                    PaymentActivities::record,
                    RecordPayment {
                        payment: self.payment.clone(),
                        approval: approval.clone(),
                    },
                    self.service_options(&self.queues.payment, "record payment", Some(token)),
                )
                .await
                .map_err(|_| self.interruption(token))?;
        }
        self.enter(PaymentStage::PaymentCompleted);
        self.track(saga_steps::PAYMENT_COMPLETION, SagaStatus::Completed, None);
        Ok(approval)
    }

    /// 3 + 4. `payment.completed`, the order marked paid (before the lean saga) and the stock
    /// confirmed, together. Answers the order and what was confirmed.
    async fn confirm(
        &self,
        token: &WorkflowCancellationToken,
        approval: &PgApproval,
    ) -> Result<(OrderUpdate, StockConfirmation), Failure> {
        self.track(saga_steps::STOCK_CONFIRMATION, SagaStatus::Started, None);
        let order = OrderUpdate {
            order_id: self.payment.order_id.clone(),
            payment_id: self.payment.payment_id.clone(),
        };
        // Built here, before the join: an activity future schedules its command when it is
        // created, and the original saga scheduled MarkOrderPaid, ConfirmStock, then the event.
        let mark_paid = if self.lean {
            Either::Left(ready(Ok(())))
        } else {
            Either::Right(self.ctx.execute_activity(
                OrderActivities::mark_paid,
                order.clone(),
                self.service_options(&self.queues.order, "order paid", Some(token)),
            ))
        };
        let ((), paid, stock) = join!(
            self.publish(EventBody::PaymentCompleted {
                payment_id: self.payment.payment_id.clone(),
                user_id: self.payment.user_id.clone(),
                total_amount: self.payment.amount,
                payment_method: self.payment.payment_method,
                pg_approval_number: approval.approval_number.clone(),
                completed_at: approval.approved_at,
            }),
            mark_paid,
            self.ctx.execute_activity(
                ProductActivities::confirm,
                ConfirmStock {
                    order_id: self.payment.order_id.clone(),
                    payment_id: self.payment.payment_id.clone(),
                },
                self.stock_options(token),
            ),
        );
        let confirmation = match stock {
            Ok(confirmation) => confirmation,
            Err(_) if token.is_cancelled() => return Err(self.interruption(token)),
            Err(err) => return Err(Failure::stock(&StepError::of(&err))),
        };
        paid.map_err(|_| self.interruption(token))?;
        self.enter(PaymentStage::StockConfirmed);
        self.track(saga_steps::STOCK_CONFIRMATION, SagaStatus::Completed, None);
        Ok((order, confirmation))
    }

    /// 5 + 6 + 7. The order completed and `stock.confirmed`; the lean saga completes the order
    /// and sends the push in one step of the order service. Answers whether the customer has
    /// been told.
    async fn complete(
        &self,
        token: &WorkflowCancellationToken,
        order: OrderUpdate,
        confirmation: StockConfirmation,
    ) -> Result<bool, Failure> {
        self.track(saga_steps::ORDER_COMPLETION, SagaStatus::Started, None);
        let confirmed = EventBody::StockConfirmed {
            payment_id: self.payment.payment_id.clone(),
            confirmed_items: confirmation.items,
            confirmed_at: self.now_millis(),
        };
        let options = |summary| self.service_options(&self.queues.order, summary, Some(token));
        let pushed = if self.platform {
            // The order completes first; `stock.confirmed` follows with the step's tracker
            // records in one batch, so the success path publishes twice in all.
            let notify = CompleteAndNotify {
                order,
                push: self.completed_push(),
            };
            let completed = self
                .ctx
                .execute_activity(
                    OrderActivities::complete_and_notify,
                    notify,
                    options("complete order, push"),
                )
                .await
                .map_err(|_| self.interruption(token))?;
            self.track(saga_steps::ORDER_COMPLETION, SagaStatus::Completed, None);
            self.publish(confirmed).await;
            completed.pushed
        } else if self.lean {
            let notify = CompleteAndNotify {
                order,
                push: self.completed_push(),
            };
            let ((), completed) = join!(
                self.publish(confirmed),
                self.ctx.execute_activity(
                    OrderActivities::complete_and_notify,
                    notify,
                    options("complete order, push"),
                ),
            );
            completed.map_err(|_| self.interruption(token))?.pushed
        } else {
            let ((), completed) = join!(
                self.publish(confirmed),
                self.ctx.execute_activity(
                    OrderActivities::complete,
                    order,
                    options("order completed"),
                ),
            );
            completed.map_err(|_| self.interruption(token))?;
            false
        };
        self.enter(PaymentStage::OrderCompleted);
        Ok(pushed)
    }

    /// The push that tells the customer the order is complete.
    fn completed_push(&self) -> PushNotification {
        let order_id = &self.payment.order_id;
        PushNotification {
            notification_id: ids::notification_id(&self.workflow_id, "order-completed"),
            user_id: self.payment.user_id.clone(),
            order_id: order_id.clone(),
            title: "주문이 완료되었습니다".to_owned(),
            body: format!("주문번호 {order_id}의 결제가 완료되었습니다. 배송 준비 중입니다."),
        }
    }

    /// The customer learns the order is complete (when the completion did not push it).
    pub(super) async fn notify_completed(&self) {
        let push = self.completed_push();
        self.push("order-completed", &push.title, push.body).await;
    }
}
