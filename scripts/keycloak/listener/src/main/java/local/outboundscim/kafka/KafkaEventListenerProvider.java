package local.outboundscim.kafka;

import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.jboss.logging.Logger;
import org.keycloak.events.Event;
import org.keycloak.events.EventListenerProvider;
import org.keycloak.events.admin.AdminEvent;

/** One per Keycloak session: serializes each event as SnuK87/keycloak-kafka does and sends it synchronously. */
public class KafkaEventListenerProvider implements EventListenerProvider {

    private static final Logger LOG = Logger.getLogger(KafkaEventListenerProvider.class);
    // A plain ObjectMapper, as SnuK87 uses: camelCase getters, enums as names, nulls kept.
    private static final ObjectMapper MAPPER = new ObjectMapper();

    private final KafkaEventListenerProviderFactory factory;

    KafkaEventListenerProvider(KafkaEventListenerProviderFactory factory) {
        this.factory = factory;
    }

    @Override
    public void onEvent(Event event) {
        if (factory.topicEvents() != null && factory.sends(event.getType())) {
            send(factory.topicEvents(), event, "event " + event.getType());
        }
    }

    @Override
    public void onEvent(AdminEvent event, boolean includeRepresentation) {
        // The representation goes out whatever includeRepresentation says, as in SnuK87's listener.
        if (factory.topicAdminEvents() != null) {
            send(factory.topicAdminEvents(), event,
                    "admin event " + event.getOperationType() + " " + event.getResourcePath());
        }
    }

    private void send(String topic, Object event, String what) {
        Producer<String, String> producer = factory.producer();
        if (producer == null) {
            LOG.warnf("%s: no bootstrap servers configured, %s dropped", KafkaEventListenerProviderFactory.ID, what);
            return;
        }
        try {
            String value = MAPPER.writeValueAsString(event);
            producer.send(new ProducerRecord<>(topic, null, value)).get(factory.sendTimeoutMs(), TimeUnit.MILLISECONDS);
            LOG.debugf("%s: %s sent to %s", KafkaEventListenerProviderFactory.ID, what, topic);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            LOG.errorf(e, "%s: interrupted sending %s to %s", KafkaEventListenerProviderFactory.ID, what, topic);
        } catch (Exception e) {
            LOG.errorf(e, "%s: failed to send %s to %s", KafkaEventListenerProviderFactory.ID, what, topic);
        }
    }

    @Override
    public void close() {
    }
}
